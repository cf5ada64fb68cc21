"""benchmarks.gpu_check: its CPU smoke run end to end (every section, the JSON, the Markdown) and its pure parts.

The smoke run is the same command a CUDA run uses (``python -m benchmarks.gpu_check --out ...``), in its own
process, at toy sizes: tiny network, 64x48 textured frames, the torchvision and DALI decoders on the CPU.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks import gpu_check, gpu_report
from data_pipeline.stream import iterate_tar, read_split

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_SECTIONS = {"shards", "parity", "decode", "loader_training", "model_speed", "memory", "families", "short_training",
                "cost"}
# Same limits as tests/test_data_dali.py: decoders differ by rounding only.
MEAN_ABS_LIMIT = 1.0
MAX_ABS_LIMIT = 16.0
SMOKE_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    """Run the smoke check once in a fresh process; return (results, JSON path, kept scratch folder)."""
    root = tmp_path_factory.mktemp("gpu_check")
    out, work = root / "out" / "gpu_check.json", root / "work"
    command = [
        sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out), "--smoke", "--device", "cpu",
        "--workers", "1", "--cpu-workers", "1", "--work-dir", str(work), "--keep-work",
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), out, work


@pytest.mark.slow
def test_smoke_runs_every_section_and_skips_only_cuda_memory(smoke_run: tuple) -> None:
    results, _, _ = smoke_run
    sections = results["sections"]
    assert set(sections) == ALL_SECTIONS
    failed = {name: section.get("reason") for name, section in sections.items() if section["status"] == "failed"}
    assert not failed
    assert sections["memory"]["status"] == "skipped" and "CUDA" in sections["memory"]["reason"]
    assert all(sections[name]["status"] == "ok" for name in ALL_SECTIONS - {"memory"})


@pytest.mark.slow
def test_smoke_environment_and_no_ffmpeg_import(smoke_run: tuple) -> None:
    results, _, _ = smoke_run
    environment = results["environment"]
    assert environment["mode"] == "smoke" and environment["cuda_available"] in (True, False)
    assert environment["cpu_count"] == os.cpu_count()
    assert environment["python"] == ".".join(str(part) for part in sys.version_info[:3])
    assert environment["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    assert datetime.datetime.fromisoformat(environment["date"]).year >= 2026
    assert results["loaded_ffmpeg_modules"] == []


@pytest.mark.slow
def test_smoke_shards_are_real_readable_jpeg_videos(smoke_run: tuple) -> None:
    results, _, work = smoke_run
    throughput = results["sections"]["shards"]["throughput"]
    sizes = results["sizes"]
    assert throughput["videos"] == sizes["num_videos"]
    videos = throughput["videos"]
    assert sizes["min_frames"] * videos <= throughput["frames"] <= sizes["max_frames"] * videos
    lengths = []
    for entry in read_split(work / "throughput", "train"):
        for raw in iterate_tar(entry.path):
            meta = json.loads(raw["json"])
            first = raw["frames"][meta["offsets"][0] : meta["offsets"][0] + meta["lengths"][0]]
            with Image.open(io.BytesIO(first)) as image:
                assert image.format == "JPEG" and image.size == (sizes["frame_width"], sizes["frame_height"])
            lengths.append(meta["num_frames"])
    assert len(lengths) == throughput["videos"] and sum(lengths) == throughput["frames"]
    temporal = results["sections"]["shards"]["temporal"]
    assert temporal["train"] > 0 and temporal["validation"] > 0 and temporal["classes"] == 12


@pytest.mark.slow
def test_smoke_backend_and_model_parity(smoke_run: tuple) -> None:
    parity = smoke_run[0]["sections"]["parity"]
    torchvision_gap = parity["backends"]["torchvision"]
    assert torchvision_gap["status"] == "ok" and torchvision_gap["values"] > 0
    assert torchvision_gap["mean_abs_255"] <= MEAN_ABS_LIMIT and torchvision_gap["max_abs_255"] <= MAX_ABS_LIMIT
    dali_gap = parity["backends"]["dali"]
    if dali_gap["status"] == "ok":
        assert dali_gap["mean_abs_255"] <= MEAN_ABS_LIMIT and dali_gap["max_abs_255"] <= MAX_ABS_LIMIT
    else:
        assert "nvidia.dali" in dali_gap["reason"]
    model = parity["model"]
    assert model["reference_norm"] > 0 and model["relative_l2"] < 1e-4


@pytest.mark.slow
def test_smoke_throughput_figures_are_consistent(smoke_run: tuple) -> None:
    sections = smoke_run[0]["sections"]
    cpu_decode = sections["decode"]["cpu"]["runs"]["2"]
    assert 0 < cpu_decode["decoded_frames_per_s"] <= cpu_decode["output_frames_per_s"]
    training = sections["loader_training"]
    ceiling = training["in_device"]["frames_per_s"]
    cpu_loader = training["backends"]["cpu"]
    assert ceiling > 0 and cpu_loader["frames_per_s"] > 0
    assert cpu_loader["data_stall"] == pytest.approx(1.0 - cpu_loader["frames_per_s"] / ceiling)
    for backend in ("dali", "torchvision"):
        assert training["backends"][backend]["status"] == "skipped"
    speed = sections["model_speed"]
    assert set(speed["ratio_to_plain"]) == {"plain", "tsm_naive", "tsm", "ffn"}
    assert speed["ratio_to_plain"]["plain"] == pytest.approx(1.0)


@pytest.mark.slow
def test_smoke_cost_reports_multiply_adds_and_latency(smoke_run: tuple) -> None:
    cost = smoke_run[0]["sections"]["cost"]
    gflops = cost["gflops"]
    assert gflops["ffn"] == gflops["tsm"]  # the folded Weight Alteration adds no counted multiply-add
    assert gflops["tsm"]["8"] == pytest.approx(2 * gflops["tsm"]["4"]) and gflops["tsm"]["4"] > 0
    assert set(cost["latency_ms"]) == {"fp32"}  # no CUDA: the training precision is fp32 too
    assert all(value > 0 for name in ("tsm", "ffn") for value in cost["latency_ms"]["fp32"][name].values())
    assert 0 < cost["weight_alteration_share"] < 0.01


@pytest.mark.slow
def test_smoke_short_training_reports_held_out_accuracy(smoke_run: tuple) -> None:
    results = smoke_run[0]
    training = results["sections"]["short_training"]
    assert training["steps"] == training["planned_steps"] > 0
    assert training["accuracy"]["videos"] == results["sections"]["shards"]["temporal"]["validation"]
    assert all(0.0 <= training["accuracy"][frames] <= 1.0 for frames in ("4", "8", "16"))
    assert training["accuracy_over_chance_16f"] == pytest.approx(training["accuracy"]["16"] * training["classes"])
    mean = sum(training["accuracy"][frames] for frames in ("4", "8", "16")) / 3
    assert training["mean_accuracy_over_chance"] == pytest.approx(mean * training["classes"])


@pytest.mark.slow
def test_smoke_targets_are_listed_not_judged_and_tabled(smoke_run: tuple) -> None:
    results, out, _ = smoke_run
    assert [target["name"] for target in results["targets"]] == [target.name for target in gpu_report.TARGETS]
    assert all(target["pass"] is None for target in results["targets"])
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| target | value | threshold | pass |" in markdown
    assert all(f"| {name} |" in markdown for name in ALL_SECTIONS)


def full_results(**values: float) -> dict[str, Any]:
    """A results tree holding the given target figures (by target name)."""
    tree: dict[str, Any] = {}
    paths = {target.name: target.path for target in gpu_report.TARGETS}
    for name, value in values.items():
        node = tree
        keys = paths[name].split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return tree


def test_targets_judge_each_comparison_and_missing_figures() -> None:
    passing = full_results(dali_data_stall=0.05, dali_decode_frames_per_s=20000.0, tsm_over_plain=0.9,
                           ffn_over_plain=0.75, ffn_16_videos_mib=30000.0, model_cuda_vs_cpu_rel_l2=5e-5,
                           short_training_over_chance=3.0)  # fmt: skip
    verdicts = {verdict["name"]: verdict["pass"] for verdict in gpu_report.evaluate_targets(passing, judged=True)}
    assert all(verdicts.values())
    failing = full_results(dali_data_stall=0.2, dali_decode_frames_per_s=5000.0, model_cuda_vs_cpu_rel_l2=1e-4)
    verdicts = {verdict["name"]: verdict["pass"] for verdict in gpu_report.evaluate_targets(failing, judged=True)}
    assert verdicts["dali_data_stall"] is False and verdicts["dali_decode_frames_per_s"] is False
    assert verdicts["model_cuda_vs_cpu_rel_l2"] is False and verdicts["tsm_over_plain"] is None
    assert all(verdict["pass"] is None for verdict in gpu_report.evaluate_targets(passing, judged=False))


def test_budget_shares_what_is_left_by_weight() -> None:
    budget = gpu_report.Budget(100.0, started=time.perf_counter() - 40.0)
    share = budget.allot("short_training", ["memory", "short_training"])
    weights = gpu_report.SECTION_WEIGHTS
    expected = 60.0 * weights["short_training"] / (weights["memory"] + weights["short_training"])
    assert share == pytest.approx(expected, rel=0.02)
    assert gpu_report.Budget(10.0, started=time.perf_counter() - 20.0).allot("shards", ["shards"]) == 0.0


def test_out_is_a_json_file_or_a_folder(tmp_path: Path) -> None:
    assert gpu_report.resolve_out(tmp_path / "x.json") == tmp_path / "x.json"
    assert gpu_report.resolve_out(tmp_path / "bench") == tmp_path / "bench" / gpu_report.JSON_NAME


def test_spent_budget_skips_every_section_but_writes_the_json(tmp_path: Path) -> None:
    results = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--budget-s", "0"])
    written = json.loads((tmp_path / gpu_report.JSON_NAME).read_text(encoding="utf-8"))
    assert set(written["sections"]) == ALL_SECTIONS == set(results["sections"])
    sections = written["sections"].values()
    assert all(section["status"] == "skipped" and "budget" in section["reason"] for section in sections)
    assert written["environment"]["cpu_count"] == os.cpu_count()


def test_a_failing_section_is_recorded_and_a_cut_off_run_keeps_earlier_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(context: gpu_report.Context, seconds: float) -> dict:
        raise ValueError("planted failure")

    def fine(context: gpu_report.Context, seconds: float) -> dict:
        return {"figure": 1.5}

    def interrupted(context: gpu_report.Context, seconds: float) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "SECTIONS", [("shards", broken), ("parity", fine), ("decode", interrupted)])
    out = tmp_path / "cut.json"
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--out", str(out), "--device", "cpu"])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["sections"]["shards"]["status"] == "failed"
    assert "planted failure" in written["sections"]["shards"]["reason"]
    assert written["sections"]["parity"] == pytest.approx({**written["sections"]["parity"], "figure": 1.5})
    assert written["sections"]["parity"]["status"] == "ok" and "decode" not in written["sections"]


@pytest.mark.slow
def test_smoke_trains_the_official_model_of_every_family(smoke_run: tuple) -> None:
    from model.registry import reference_runs

    families = smoke_run[0]["sections"]["families"]
    assert families["status"] == "ok" and set(reference_runs()) <= set(families)
    for family, run in reference_runs().items():
        entry = families[family]
        assert entry["status"] == "ok" and entry["arch"] == run.arch and entry["frames"] == list(run.trained_frames)
        assert entry["frames_per_s"] > 0 and "memory" not in entry  # memory needs CUDA
