"""The cost of a frame count: multiply-adds by torch's FLOP counter (checked against the TSM paper), latency, and
the plot's cost panel."""

from __future__ import annotations

import pytest
import torch

from engine.cost import (
    count_multiply_adds,
    cost_settings,
    measure_costs,
    measure_latency_ms,
    median_forward,
    weight_alteration_share,
)
from engine.reporting import plot_top1
from model import build_model

from script_helpers import load_script

PAPER_TOLERANCE = 0.02
# TSM paper (Lin, Gan, Han, ICCV 2019), Table 1 / Table 5: TSM-ResNet50 on 224 x 224, one clip, one crop.
TSM_R50_PAPER_MULTIPLY_ADDS = {8: 33e9, 16: 65e9}
SSV2_CLASSES = 174
FFN_FRAMES = (4, 8, 16)
CROP = 224


@pytest.fixture(scope="module")
def resnet50_networks() -> dict[str, torch.nn.Module]:
    """TSM-ResNet50 and TSM-FFN-ResNet50 on the CPU (the count itself runs on meta tensors: no arithmetic)."""
    return {"tsm": build_model(arch="resnet50", num_classes=SSV2_CLASSES).eval(),
            "ffn": build_model(arch="resnet50", num_classes=SSV2_CLASSES, trained_frames=FFN_FRAMES).eval()}


@pytest.mark.parametrize("frames", sorted(TSM_R50_PAPER_MULTIPLY_ADDS))
def test_tsm_resnet50_multiply_adds_match_the_tsm_paper(resnet50_networks, frames):
    counted = count_multiply_adds(resnet50_networks["tsm"], frames, CROP)
    paper = TSM_R50_PAPER_MULTIPLY_ADDS[frames]
    assert abs(counted - paper) <= PAPER_TOLERANCE * paper, f"{counted / 1e9:.2f}G against the paper's {paper / 1e9}G"


@pytest.mark.parametrize("frames", [1, 4, 6, 8, 16])
def test_ffn_costs_what_tsm_costs_up_to_the_weight_alteration_share(resnet50_networks, frames):
    """FFN's branch at T (6 runs the 8 branch) counts TSM's multiply-adds plus at most the stated WA share."""
    tsm = count_multiply_adds(resnet50_networks["tsm"], frames, CROP)
    ffn = count_multiply_adds(resnet50_networks["ffn"], frames, CROP)
    share = weight_alteration_share(resnet50_networks["ffn"], frames, CROP)
    assert share is not None and 0.0 < share < 0.005  # a depthwise 1x1 conv per block: about 0.14% of ResNet-50
    assert tsm <= ffn <= tsm * (1.0 + share)
    assert weight_alteration_share(resnet50_networks["tsm"], frames, CROP) is None


def test_count_scales_with_frames_views_and_crop(resnet50_networks):
    network = resnet50_networks["tsm"]
    one_frame = count_multiply_adds(network, 1, CROP)
    assert count_multiply_adds(network, 16, CROP) == 16 * one_frame
    assert count_multiply_adds(network, 8, CROP, views=6) == 6 * count_multiply_adds(network, 8, CROP)
    assert count_multiply_adds(network, 1, 256) > one_frame


def test_no_weight_alteration_ablation_has_no_share():
    network = build_model(arch="tiny", num_classes=4, trained_frames=FFN_FRAMES, weight_alteration=False)
    assert weight_alteration_share(network, 8, CROP) is None


def test_costs_of_the_tiny_network_on_the_cpu():
    """Every frame count gets GFLOPs and a latency; the count does not need the network's device."""
    network = build_model(arch="tiny", num_classes=4, trained_frames=FFN_FRAMES).eval()
    state = torch.get_rng_state()
    costs = measure_costs({"ffn": network}, [2, 4, 16], 32, 1, torch.device("cpu"), "fp32", latency_runs=1)
    assert torch.equal(torch.get_rng_state(), state)  # the timing input comes from a private generator
    assert set(costs["ffn"]["gflops"]) == set(costs["ffn"]["latency_ms"]) == {"2", "4", "16"}
    assert costs["ffn"]["gflops"]["16"] == pytest.approx(8 * costs["ffn"]["gflops"]["2"], rel=1e-4)
    assert all(value > 0 for value in costs["ffn"]["latency_ms"].values())
    skipped = measure_costs({"ffn": network}, [4], 32, 3, torch.device("cpu"), "fp32", latency_runs=0)
    assert skipped["ffn"]["latency_ms"] == {"4": None}
    assert skipped["ffn"]["gflops"]["4"] == pytest.approx(3 * costs["ffn"]["gflops"]["4"], rel=1e-4)
    settings = cost_settings({"ffn": network}, [4], 32, 3, torch.device("cpu"), "fp32", latency_runs=0)
    assert settings["views_per_video"] == 3 and settings["latency_ms"].startswith("not measured")
    assert 0.0 < settings["weight_alteration_share"]["ffn"] < 0.05
    with pytest.raises(ValueError, match="at least one timed run"):
        measure_latency_ms(network, 4, 32, 1, torch.device("cpu"), "fp32", runs=0)


def entry(top1: dict[str, float], gflops: dict[str, float] | None) -> dict:
    """An evaluate.py JSON model entry."""
    result = {"top1": top1, "top5": top1, "trained_frames": [4]}
    if gflops is not None:
        result["gflops"] = gflops
    return result


@pytest.mark.parametrize("runs", [1, 3])
def test_median_forward_returns_the_first_timed_output_and_counts_every_pass(runs):
    """Warm-up passes are untimed, then `runs` timed ones: the output is the network's, every pass runs once."""
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, inputs):
            calls.append(len(calls))
            return inputs * 2

    inputs = torch.ones(2, 3)
    output, seconds = median_forward(Counting(), inputs, torch.device("cpu"), "fp32", runs=runs, warmup=2)
    assert torch.equal(output, inputs * 2) and seconds >= 0 and len(calls) == 2 + runs
    with pytest.raises(ValueError, match="at least one timed run"):
        median_forward(Counting(), inputs, torch.device("cpu"), "fp32", runs=0, warmup=0)


@pytest.mark.parametrize("with_costs", [True, False])
def test_plot_adds_the_cost_panel_when_gflops_are_present(tmp_path, with_costs):
    gflops = {"2": 1.0, "4": 2.0, "8": 4.0} if with_costs else None
    models = {"ffn": entry({"2": 40.0, "4": 60.0, "8": 62.0}, gflops),
              "tsm": entry({"2": 10.0, "4": 30.0, "8": 61.0}, gflops)}
    path = tmp_path / "plot.png"
    figure = plot_top1(models, [2, 4, 8], path, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == (2 if with_costs else 1)
    if with_costs:
        cost_axes = figure.axes[1]
        assert cost_axes.get_xscale() == "log"
        assert [list(line.get_xdata()) for line in cost_axes.get_lines()] == [[1.0, 2.0, 4.0]] * 2


def test_plot_of_one_model_with_costs_missing_at_one_frame_count_keeps_one_panel(tmp_path):
    models = {"ffn": entry({"2": 40.0, "4": 60.0}, {"2": 1.0})}
    assert len(plot_top1(models, [2, 4], tmp_path / "plot.png", "title").axes) == 1


def test_demo_aggregate_carries_gflops_and_mean_latency_over_seeds():
    demo = load_script("demo")

    def seed_entry(top1: float, latency: float | None, gflops: float = 0.5) -> dict:
        return {"top1": {"4": top1}, "top5": {"4": top1}, "trained_frames": [4], "split": "validation", "n": 3,
                "checkpoint": "last.pt", "gflops": {"4": gflops}, "latency_ms": {"4": latency}}

    per_seed = {"models": {"tsm4@seed0": seed_entry(50.0, 2.0), "tsm4@seed1": seed_entry(70.0, 4.0)}}
    models = demo.aggregate(per_seed, ["tsm4"], [0, 1])
    assert models["tsm4"]["gflops"] == {"4": 0.5} and models["tsm4"]["latency_ms"] == {"4": 3.0}
    per_seed["models"]["tsm4@seed1"]["latency_ms"] = {"4": None}
    assert demo.aggregate(per_seed, ["tsm4"], [0, 1])["tsm4"]["latency_ms"] == {"4": None}
    per_seed["models"]["tsm4@seed1"]["gflops"] = {"4": 0.6}
    with pytest.raises(SystemExit, match="different GFLOPs"):
        demo.aggregate(per_seed, ["tsm4"], [0, 1])
    for item in per_seed["models"].values():
        del item["gflops"], item["latency_ms"]
    assert "gflops" not in demo.aggregate(per_seed, ["tsm4"], [0, 1])["tsm4"]
    assert demo.aggregate(per_seed, ["tsm4"], [0])["tsm4"]["top1"] == {"4": 50.0}


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_demo_plot_has_the_cost_panel_when_the_report_has_gflops(tmp_path, seeds):
    """scripts/demo.py's tfd.png: top-1 and top-1 against GFLOPs (two axes) from a small tfd.json-like report."""
    demo = load_script("demo")
    gflops = {"4": 0.5, "8": 1.0}
    models = {"tsm8": entry({"4": 20.0, "8": 50.0}, gflops), "ffn": entry({"4": 45.0, "8": 52.0}, gflops)}
    report = {"settings": {"seeds": seeds, "n_validation": 6, "eval_frames": [4, 8]}, "models": models}
    path = tmp_path / "tfd.png"
    figure = demo.write_plot(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(figure.axes) == 2
    for model in models.values():
        del model["gflops"]
    assert len(demo.write_plot(report, path).axes) == 1


def test_command_line_prints_tsm_and_ffn_per_frame_count(capsys):
    from engine.cost import main

    assert main(["--arch", "tiny", "--crop-size", "32", "--frames", "2", "16", "--num-classes", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny, 32 px, 1 view(s)") and len(lines) == 3
    assert "2F" in lines[1] and "(branch 4)" in lines[1] and "(branch 16)" in lines[2]
