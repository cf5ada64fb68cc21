"""scripts/demo.py --archs (`make demo-archs`): the architecture table's plan, report, plot and a toy-size run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from script_helpers import load_script


demo = load_script("demo")


def test_tsm_row_is_make_demo_so_its_runs_are_reused():
    """TSM's four models have make demo's names and arguments (no preset flag): a finished make demo is reused."""
    names = demo.arch_model_names("tsm")
    arguments = demo.arch_train_args("tsm")
    assert demo.preset_flags(demo.ARCH_EXPERIMENTS["tsm"].preset) == []
    for kind, name in names.items():
        assert arguments[kind] == demo.MODELS[name], kind
    assert demo.ARCH_EXPERIMENTS["tsm"].preset["epochs"] == demo.PRESETS["demo"]["epochs"]


@pytest.mark.parametrize("family", ["tea", "slowfast", "uniformer"])
def test_other_families_name_their_model_and_share_one_preset_across_kinds(family):
    experiment = demo.ARCH_EXPERIMENTS[family]
    arguments = demo.arch_train_args(family)
    flags = demo.preset_flags(experiment.preset)
    assert flags[flags.index("--arch") + 1] == experiment.arch
    low, middle, high = (str(count) for count in experiment.frames)
    assert arguments["ffn"][:6] == ["--mode", "ffn", "--frames", low, middle, high]
    assert arguments["vanilla"][:4] == ["--mode", "vanilla", "--frames", high]
    assert arguments["st_low"][3] == low and arguments["st_middle"][3] == middle
    assert all(argument[-len(flags):] == flags for argument in arguments.values())
    assert len(set(demo.arch_model_names(family).values())) == 4


def test_preset_flags_spell_booleans_and_values():
    preset = {**demo.DEMO_ARCH_PRESET, "multi_scale": True, "lr": 1e-3, "epochs": 7}
    assert demo.preset_flags(preset) == ["--lr", "0.001", "--multi-scale"]
    assert demo.preset_flags({**demo.DEMO_ARCH_PRESET, "multi_scale": False}) == []


def test_evaluation_frames_are_every_count_the_model_accepts():
    assert demo.arch_eval_frames("tsm") == list(range(2, 17))
    assert demo.arch_eval_frames("uniformer") == list(range(2, 17))
    assert demo.arch_eval_frames("slowfast") == [4, 8, 12, 16]  # multiples of alpha (4) up to H


def test_replayed_seconds_fill_the_free_slot_first():
    assert demo.replayed_seconds([], 2) == 0.0
    assert demo.replayed_seconds([5.0], 2) == 5.0
    assert demo.replayed_seconds([6.0, 4.0, 3.0, 1.0], 2) == 7.0
    assert demo.replayed_seconds([6.0, 4.0, 3.0], 1) == 13.0


def fake_per_seed(family: str, seeds: list[int], values: dict[str, dict[int, float]]) -> dict:
    """evaluate.py's JSON for a family's four models: {kind: {frames: top-1}} the same for every seed (+ seed)."""
    names = demo.arch_model_names(family)
    models = {}
    for seed in seeds:
        for kind, name in names.items():
            top1 = {str(frames): value + seed for frames, value in values[kind].items()}
            models[f"{name}@seed{seed}"] = {"top1": top1, "top5": top1, "trained_frames": [], "split": "validation",
                                            "n": 10, "checkpoint": f"{name}.pt",
                                            "gflops": {rate: 0.001 * int(rate) for rate in top1}}
    return {"models": models}


TSM_VALUES = {
    "vanilla": {2: 9.0, 4: 8.0, 6: 20.0, 8: 50.0, 12: 87.0, 16: 99.0},
    "st_low": {2: 22.0, 4: 98.0, 6: 86.0, 8: 50.0, 12: 22.0, 16: 17.0},
    "st_middle": {2: 10.0, 4: 31.0, 6: 87.0, 8: 99.0, 12: 80.0, 16: 41.0},
    "ffn": {2: 21.0, 4: 98.0, 6: 89.0, 8: 99.0, 12: 89.0, 16: 99.0},
}


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_family_entry_has_the_table_margins_and_untrained_counts(seeds):
    per_seed = fake_per_seed("tsm", seeds, TSM_VALUES)
    backbone = (Path("backbone.pt"), {"sha256": "ab", "settings": {}, "val_top1": 95.0, "train_s": 1.0})
    commands = {name: "train.py ..." for name in demo.arch_model_names("tsm").values()}
    entry = demo.family_entry("tsm", per_seed, seeds, backbone, commands)
    shift = sum(seeds) / len(seeds)
    assert entry["frames"] == [4, 8, 16]
    assert entry["vanilla"]["4"] == pytest.approx(8.0 + shift) and entry["ffn"]["16"] == pytest.approx(99.0 + shift)
    assert entry["st"] == {"4": pytest.approx(98.0 + shift), "8": pytest.approx(99.0 + shift),
                           "16": pytest.approx(99.0 + shift)}
    assert entry["gflops"]["16"] == 0.016 and entry["st_models"]["4"]["12"] == pytest.approx(22.0 + shift)
    assert all(row["pass"] for row in entry["margins"]) and len(entry["margins"]) == 5
    assert sorted(entry["untrained_frames"], key=int) == ["2", "6", "12"]
    six = entry["untrained_frames"]["6"]
    assert six["best_st_model"] == "tsm8" and six["difference"] == pytest.approx(2.0)
    assert ("vanilla_min" in entry) == (len(seeds) > 1)
    if len(seeds) > 1:
        assert entry["st_min"]["4"] == 98.0 and entry["st_max"]["4"] == 100.0
    assert entry["by_seed"]["st"]["4"] == [98.0 + seed for seed in seeds]


def test_a_failed_margin_is_reported_as_missed():
    values = {**TSM_VALUES, "ffn": {**TSM_VALUES["ffn"], 4: 60.0}}
    entry = demo.family_entry("tsm", fake_per_seed("tsm", [0], values), [0],
                              (Path("b.pt"), {"sha256": "", "settings": {}, "val_top1": 0.0, "train_s": 0.0}),
                              {name: "" for name in demo.arch_model_names("tsm").values()})
    verdicts = {row["rule"]: row["pass"] for row in entry["margins"]}
    assert verdicts["ffn@4F >= st@4F - 3"] is False and verdicts["ffn@4F >= vanilla@4F + 30"] is True


@pytest.mark.parametrize("families", [["tsm"], ["tsm", "tea", "slowfast"]])
def test_plot_has_one_panel_per_family(tmp_path, families):
    backbone = (Path("b.pt"), {"sha256": "", "settings": {}, "val_top1": 0.0, "train_s": 0.0})
    archs = {}
    for family in families:
        low, middle, high = demo.ARCH_EXPERIMENTS[family].frames
        values = {kind: {low // 2: 10.0, low: 50.0, middle: 60.0, (middle + high) // 2: 55.0, high: 70.0}
                  for kind in demo.ARCH_KINDS}
        commands = {name: "" for name in demo.arch_model_names(family).values()}
        archs[family] = demo.family_entry(family, fake_per_seed(family, [0, 1], values), [0, 1], backbone, commands)
    report = {"archs": archs, "settings": {"seeds": [0, 1], "n_validation": 10}}
    path = tmp_path / "archs.png"
    figure = demo.write_archs_plot(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len([axes for axes in figure.axes if axes.get_visible()]) == len(families)
    table = demo.format_arch_table(report).splitlines()
    assert len(table) == 1 + 3 * len(families) and "-FFN" in table[3] and "[" in table[1]


def test_archs_runs_alone():
    with pytest.raises(SystemExit, match="on its own"):
        demo.main(["--runs", "unused", "--archs", "--study", "ablations"])


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a guard against a hang only: 16 one-epoch trainings take minutes on a loaded machine
def test_toy_run_trains_every_family_and_writes_the_report(tmp_path, capsys):
    """One epoch per model, every family, on a tiny dataset and tiny pretraining: archs.json and archs.png."""
    runs = tmp_path / "demo"
    arguments = ["--runs", str(runs), "--archs", "--videos-per-class", "4", "--epochs", "1", "--pretrain-epochs", "1",
                 "--pretrain-images-per-class", "2", "--workers", "1", "--jobs", "2"]
    assert demo.main(arguments) == 0
    report = json.loads((runs / "archs.json").read_text())
    assert sorted(report["archs"]) == sorted(demo.FAMILIES)  # archs.json is written with sorted keys
    for family, entry in report["archs"].items():
        experiment = demo.ARCH_EXPERIMENTS[family]
        assert entry["frames"] == list(experiment.frames) and entry["arch"] == experiment.arch
        assert sorted(entry["vanilla"], key=int) == [str(count) for count in demo.arch_eval_frames(family)]
        assert set(entry["st"]) == {str(count) for count in experiment.frames}
        assert entry["settings"]["pretraining"]["sha256"] and set(entry["gflops"]) == set(entry["ffn"])
        for name in demo.arch_model_names(family).values():
            assert (runs / "seed0" / name / "last.pt").is_file()
    assert (runs / "archs.png").is_file()
    idle = report["settings"]["idle_estimate"]
    assert idle["training_cpu_s"] > 0 and idle["pretraining_cpu_s"] > 0 and not idle["missing"]
    assert idle["total_s"] >= idle["training_s"] >= idle["training_cpu_s"] / 2
    assert all(report["settings"]["run_cpu_seconds"].values())
    printed = capsys.readouterr().out
    assert "TEA-FFN" in printed and "idle estimate" in printed
    assert demo.main([*arguments[:3], "slowfast", *arguments[3:]]) == 0  # a rerun reuses every finished run
    printed = capsys.readouterr().out
    assert "reusing" in printed and "training (" not in printed
    assert list(json.loads((runs / "archs.json").read_text())["archs"]) == ["slowfast"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
