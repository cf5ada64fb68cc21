"""SlowFast and SlowFast-FFN beyond parity: the interface, the Slow pathway's frames, the branch rule, statelessness,
branch isolation in training, pretrained initialisation (PySlowFast .pyth and caffe2 .pkl files), the cost."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cost import count_multiply_adds, main as cost_main, weight_alteration_share
from model import BranchNorm, WeightAlteration, branch_scope, build_model, model_family, model_names
from model.slowfast import (
    official_slowfast_key,
    official_training_order,
    official_training_slow_index,
    read_caffe2_blobs,
    slow_frame_index,
    to_official_slowfast_state_dict,
)
from model.tsm_resnet import count_parameters

TRAINED = (4, 8, 16)
NUM_CLASSES = 5
SIZE = 32
# PyTorchVideo model zoo (benchmarked with PySlowFast): SlowFast R50 8x8 on Kinetics-400, 65.71 GFLOPs per view
# (256 x 256 crop, 400 classes); the SlowFast paper (Table 2) gives 65.7. 8x8 = 32 Fast frames, alpha 4.
PUBLISHED_8X8_R50_MULTIPLY_ADDS = 65.71e9
PUBLISHED_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def ffn() -> torch.nn.Module:
    """A tiny SlowFast-FFN whose branches differ (every BatchNorm copy randomised, as after training)."""
    torch.manual_seed(0)
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=TRAINED, dropout=0.0)
    randomise_norms(model)
    return model


def randomise_norms(model: torch.nn.Module) -> None:
    """Random affine parameters and running statistics in every BatchNorm (each private copy its own)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.weight.data.normal_(1.0, 0.2)
            module.bias.data.normal_(0.0, 0.2)
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 1.5)


def frame_numbered_videos(num_videos: int, frames: int) -> torch.Tensor:
    """Videos whose frame t is the constant t everywhere (so a frame's value tells its index)."""
    numbers = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1, 1)
    return numbers.expand(num_videos, frames, 3, SIZE, SIZE).contiguous()


def slow_frames_seen(model: torch.nn.Module, run) -> list[list[int]]:
    """The Fast frame indices the Slow stem received, per call made by `run` (read from frame-numbered input)."""
    seen = []
    handle = model.slow_stem.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0][0, 0, :, 0, 0].round().long().tolist()))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_registered_names_config_and_input_spec() -> None:
    assert {"slowfast_r50", "slowfast_tiny"} <= set(model_names())
    assert model_family("slowfast_r50") == model_family("slowfast_tiny") == "slowfast"
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=(16, 8), wa_init="paper")
    assert model.config == {"arch": "slowfast_tiny", "num_classes": NUM_CLASSES, "trained_frames": [8, 16],
                            "pretrained": None, "dropout": 0.5, "private_norms": True, "weight_alteration": True,
                            "wa_init": "paper", "slow_mode": "per-clip"}
    rebuilt = build_model(**model.config)
    assert [name for name, _ in rebuilt.named_parameters()] == [name for name, _ in model.named_parameters()]
    spec = model.input_spec
    assert (spec.mean, spec.std, spec.channel_order) == ((0.45,) * 3, (0.225,) * 3, "RGB")
    assert (spec.frames_multiple, spec.min_frames) == (4, 4)
    assert model.classifier is model.fc and model.fc.in_features == 256 + 64
    for option, value in (("slow_mode", "every4th"), ("wa_init", "zero")):
        with pytest.raises(ValueError, match=f"{option}='{value}' is not one of"):
            build_model("slowfast_tiny", NUM_CLASSES, **{option: value})
    with pytest.raises(ValueError, match="does not run at 6 frames"):
        build_model("slowfast_tiny", NUM_CLASSES, trained_frames=(6, 8))


@pytest.mark.parametrize(("frames", "message"), [(6, "use 4 or 8"), (2, "use 4$"), (13, "use 12 or 16")])
def test_frame_counts_that_are_not_multiples_of_alpha_get_one_line_naming_the_nearest(ffn, frames, message) -> None:
    with pytest.raises(ValueError, match=f"does not run at {frames} frames .*{message}") as error:
        ffn.eval()(torch.zeros(1, frames, 3, SIZE, SIZE))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"must be \(N, T, 3, H, W\)"):
        ffn(torch.zeros(1, 8, SIZE, SIZE))


def test_slow_pathway_takes_the_official_linspace_frames(ffn) -> None:
    assert slow_frame_index(16, 4).tolist() == [0, 5, 10, 15]
    assert slow_frame_index(32, 4).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    assert slow_frame_index(4, 4).tolist() == [0]
    ffn.eval()
    with torch.no_grad():
        seen = slow_frames_seen(ffn, lambda: [ffn(frame_numbered_videos(2, frames)) for frames in (4, 12, 16)])
    assert seen == [[0], [0, 5, 11], [0, 5, 10, 15]]


def test_official_slow_mode_takes_the_official_training_frames_in_multi_frame_count_calls() -> None:
    assert official_training_order((32, 16, 64)) == [64, 16, 32]
    index = official_training_slow_index((16, 32, 64), 4)
    assert index[16].tolist() == [1, 5, 10, 14]
    assert index[32].tolist() == [2, 6, 10, 14, 18, 22, 26, 31]
    assert index[64].tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 37, 41, 45, 49, 53, 57, 61]
    with pytest.raises(ValueError, match="not a multiple of alpha=4"):
        official_training_slow_index((6, 8), 4)
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=(16, 32, 64), slow_mode="official").train()
    videos = {frames: frame_numbered_videos(2, frames) for frames in (16, 32, 64)}
    seen = slow_frames_seen(model, lambda: model(videos))  # forward_by_frames runs 16, 32, 64 in order
    assert seen == [index[16].tolist(), index[32].tolist(), index[64].tolist()]
    seen = slow_frames_seen(model, lambda: model(videos[16]))  # a single call (evaluation) is per clip
    assert seen == [[0, 5, 10, 15]]
    per_clip = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=(16, 32, 64)).train()
    assert slow_frames_seen(per_clip, lambda: per_clip(videos))[0] == [0, 5, 10, 15]


def test_untrained_frame_counts_run_the_nearest_branch_ties_to_the_larger(ffn) -> None:
    ffn.eval()
    videos = torch.randn(2, 12, 3, SIZE, SIZE)
    assert [ffn.branch_for(frames) for frames in (4, 8, 12, 16, 20, 64)] == [4, 8, 16, 16, 16, 16]
    with torch.no_grad():
        logits = ffn(videos)
        with branch_scope(16):
            expected = ffn.forward_branch(videos, 12)
        with branch_scope(8):
            other = ffn.forward_branch(videos, 12)
    assert logits.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert not torch.allclose(logits, other)
    vanilla = build_model("slowfast_tiny", NUM_CLASSES).eval()
    assert vanilla.branch_for(12) is None and vanilla(videos).shape == (2, NUM_CLASSES)


def test_calls_leave_no_state_behind(ffn) -> None:
    """A training step after evaluation calls gives what it gives on a fresh copy; eval outputs do not move."""
    videos = {frames: torch.randn(2, frames, 3, SIZE, SIZE) for frames in TRAINED}
    fresh = copy.deepcopy(ffn)
    ffn.eval()
    with torch.no_grad():
        first = ffn(videos[8])
        ffn(videos[16])
        ffn({4: videos[4]})
        assert torch.equal(ffn(videos[8]), first)
        trained_after_eval = ffn.train()(videos)
        trained_fresh = fresh.train()(videos)
    for frames in TRAINED:
        assert torch.equal(trained_after_eval[frames], trained_fresh[frames])
    for ours, theirs in zip(ffn.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(ours, theirs)


def test_a_training_call_touches_only_its_own_branch() -> None:
    torch.manual_seed(1)
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=TRAINED, wa_init="paper").train()
    norms = [module for module in model.modules() if isinstance(module, BranchNorm)]
    alterations = [module for module in model.modules() if isinstance(module, WeightAlteration)]
    assert len(alterations) == 8 and len(norms) == 2 + 4 + 2 * (4 * 3 + 4)  # stems, fusions, blocks, shortcuts
    randomise_norms(model)  # the last BatchNorm of each block starts at 0, which would stop every gradient before it
    before = copy.deepcopy(model.state_dict())
    logits = model({8: torch.randn(2, 8, 3, SIZE, SIZE)})[8]
    logits.square().sum().backward()
    state = model.state_dict()
    for key, value in state.items():
        changed = not torch.equal(value, before[key])
        if ".norms.8." in key and not key.endswith(("weight", "bias")):
            assert changed, key  # running statistics and the batch counter of the 8-frame copies
        elif ".norms." in key and ".norms.8." not in key:
            assert not changed, key
    for name, parameter in model.named_parameters():
        private_to = next((frames for frames in TRAINED if f".norms.{frames}." in name or f".convs.{frames}." in name),
                          None)
        if private_to is not None and private_to != 8:
            assert parameter.grad is None, name
        elif private_to == 8 and ".wa." in name:
            assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name


def test_weight_alteration_alters_the_residual_input_only() -> None:
    """The folded form equals x + wa(x) into conv_a, while the shortcut reads the unaltered input."""
    torch.manual_seed(2)
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=(4,), wa_init="paper").eval()
    block = model.slow_res2[0]
    for conv in block.wa.convs.values():
        torch.nn.init.normal_(conv.weight, 0.0, 0.5)
    features = torch.randn(2, block.conv_a.in_channels, 1, 8, 8, dtype=torch.float64)
    block = copy.deepcopy(block).double()
    with torch.no_grad(), branch_scope(4):
        altered = features + block.wa.convs["4"](features)
        residual = torch.relu(block.bn_a(block.conv_a(altered)))
        residual = torch.relu(block.bn_b(block.conv_b(residual)))
        residual = block.bn_c(block.conv_c(residual))
        expected = torch.relu(residual + block.shortcut_bn(block.shortcut_conv(features)))
        torch.testing.assert_close(block(features), expected)


def test_tiny_variant_is_small_and_trains_at_32_px() -> None:
    torch.manual_seed(4)
    model = build_model("slowfast_tiny", 10, trained_frames=TRAINED)
    assert 150_000 < count_parameters(model) < 400_000
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    videos = {frames: torch.randn(2, frames, 3, SIZE, SIZE) for frames in TRAINED}
    labels = torch.tensor([0, 1])
    losses = []
    for _ in range(3):
        logits = model.train()(videos)
        loss = sum(torch.nn.functional.cross_entropy(value, labels) for value in logits.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------------------------
# Pretrained initialisation from files in the official layouts


CAFFE2_LEAVES = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
# PySlowFast key -> caffe2 blob of PySlowFast's Kinetics .pkl files ("t_" marks the Fast pathway; BatchNorm leaves
# s / b / rm / riv). slowfast_tiny has one block per stage, so each lateral connection reads block 0 of its stage.
CAFFE2_NAMES = (
    (r"^s1\.pathway(\d)_stem\.conv\.weight$", r"{t}conv1_w"),
    (r"^s1\.pathway(\d)_stem\.bn\.(\w+)$", r"{t}res_conv1_bn_{leaf}"),
    (r"^s(\d)\.pathway(\d)_res(\d+)\.branch1\.weight$", r"{t}res\1_\3_branch1_w"),
    (r"^s(\d)\.pathway(\d)_res(\d+)\.branch1_bn\.(\w+)$", r"{t}res\1_\3_branch1_bn_{leaf}"),
    (r"^s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])\.weight$", r"{t}res\1_\3_branch2\4_w"),
    (r"^s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])_bn\.(\w+)$", r"{t}res\1_\3_branch2\4_bn_{leaf}"),
    (r"^s1_fuse\.conv_f2s\.weight$", "t_pool1_subsample_w"),
    (r"^s1_fuse\.bn\.(\w+)$", "t_pool1_subsample_bn_{leaf}"),
    (r"^s(\d)_fuse\.conv_f2s\.weight$", r"t_res\1_0_branch2c_bn_subsample_w"),
    (r"^s(\d)_fuse\.bn\.(\w+)$", r"t_res\1_0_branch2c_bn_subsample_bn_{leaf}"),
    (r"^head\.projection\.weight$", "pred_w"),
    (r"^head\.projection\.bias$", "pred_b"),
)


def caffe2_blob_name(name: str) -> str | None:
    """The caffe2 blob of a PySlowFast SlowFast key, None for a counter (num_batches_tracked)."""
    if name.endswith("num_batches_tracked"):
        return None
    for pattern, blob in CAFFE2_NAMES:
        match = re.match(pattern, name)
        if match:
            fast = ".pathway1" in name
            return match.expand(blob).format(t="t_" if fast else "", leaf=CAFFE2_LEAVES.get(name.rsplit(".", 1)[1]))
    raise AssertionError(f"no caffe2 name for {name}")


@pytest.fixture(scope="module")
def kinetics_like_source() -> dict[str, torch.Tensor]:
    """A vanilla slowfast_tiny with random BatchNorm statistics, in PySlowFast names, with a 400-class head."""
    torch.manual_seed(3)
    source = build_model("slowfast_tiny", 400)
    randomise_norms(source)
    return to_official_slowfast_state_dict(source)


def check_pretrained_load(model: torch.nn.Module, init: dict[str, torch.Tensor], source: dict[str, torch.Tensor],
                          load) -> None:
    """Every backbone key from the source, each private copy from the same BatchNorm; WA and head at init."""
    assert load.dropped == ["head.projection.weight", "head.projection.bias"]
    assert sorted(load.left_at_init) == sorted(key for key in init if ".wa." in key or key.startswith("fc."))
    for key, value in model.state_dict().items():
        if key in load.left_at_init:
            assert torch.equal(value, init[key]), key
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(value, source[official_slowfast_key(re.sub(r"\.norms\.\d+\.", ".", key))]), key


def test_pretrained_pyslowfast_checkpoint_initialises_every_branch(tmp_path: Path, kinetics_like_source) -> None:
    path = tmp_path / "SLOWFAST_8x8_R50.pyth"
    torch.save({"epoch": 196, "model_state": kinetics_like_source, "cfg": "SLOWFAST:\n  ALPHA: 4\n"}, path)
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=TRAINED)
    init = copy.deepcopy(model.state_dict())
    load = model.load_pretrained(str(path))
    check_pretrained_load(model, init, kinetics_like_source, load)
    built = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=TRAINED, pretrained=str(path))
    assert built.backbone_load.loaded == load.loaded and built.config["pretrained"] is None
    assert "left at init: 26 keys" in built.backbone_load.summary()  # 8 blocks x 3 branches of WA, fc weight, bias


def test_pretrained_caffe2_pickle_loads_like_the_pytorch_file(tmp_path: Path, kinetics_like_source) -> None:
    blobs = {caffe2_blob_name(key): value.numpy() for key, value in kinetics_like_source.items()
             if caffe2_blob_name(key) is not None}
    assert len(blobs) == sum(not key.endswith("num_batches_tracked") for key in kinetics_like_source)
    blobs["conv1_w_momentum"] = np.zeros(3, dtype=np.float32)  # optimizer state and counters are skipped
    blobs["model_iter"] = np.array(1000)
    path = tmp_path / "SLOWFAST_8x8_R50.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"blobs": blobs}, handle, protocol=2)
    assert set(read_caffe2_blobs(path)) == set(blobs)
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=TRAINED)
    init = copy.deepcopy(model.state_dict())
    check_pretrained_load(model, init, kinetics_like_source, model.load_pretrained(str(path)))


def test_bad_pretrained_files_are_refused_in_one_line(tmp_path: Path) -> None:
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=TRAINED)
    hostile = tmp_path / "hostile.pkl"
    with open(hostile, "wb") as handle:
        pickle.dump({"blobs": {"conv1_w": Path("x")}}, handle, protocol=2)
    with pytest.raises(ValueError, match="not a caffe2 checkpoint .*refusing to load pathlib"):
        model.load_pretrained(str(hostile))
    other = tmp_path / "resnet.pyth"
    torch.save({"model_state": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, other)
    with pytest.raises(ValueError, match=r"do not fit arch='slowfast_tiny': \d+ model keys missing"):
        model.load_pretrained(str(other))
    big = build_model("slowfast_tiny", 400)
    big_file = tmp_path / "wide.pyth"
    state = to_official_slowfast_state_dict(big)
    state["s1.pathway0_stem.conv.weight"] = torch.zeros(32, 3, 1, 7, 7)
    torch.save({"model_state": state}, big_file)
    with pytest.raises(ValueError, match=r"1 unexpected \(e\.g\. \['s1\.pathway0_stem\.conv\.weight \(shape"):
        model.load_pretrained(str(big_file))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.load_pretrained(str(tmp_path / "missing.pkl"))


# ----------------------------------------------------------------------------------------------------------------
# Cost


def test_r50_multiply_adds_match_the_published_slowfast_8x8_figure() -> None:
    """32 Fast frames, 256 x 256, 400 classes: within 5% of 65.71 G; FFN runs the same convolutions."""
    vanilla = build_model("slowfast_r50", 400).eval()
    counted = count_multiply_adds(vanilla, 32, 256)
    assert abs(counted - PUBLISHED_8X8_R50_MULTIPLY_ADDS) <= PUBLISHED_TOLERANCE * PUBLISHED_8X8_R50_MULTIPLY_ADDS
    assert count_multiply_adds(vanilla, 64, 256) == pytest.approx(2 * counted, rel=1e-3)
    ffn = build_model("slowfast_r50", 400, trained_frames=(16, 32, 64)).eval()
    assert count_multiply_adds(ffn, 32, 256) == counted
    share = weight_alteration_share(ffn, 32, 256)
    assert share is not None and 0.0 < share < 0.005


def test_cost_command_line_runs_for_slowfast(capsys) -> None:
    assert cost_main(["--arch", "slowfast_tiny", "--crop-size", "32", "--frames", "4", "12", "--num-classes", "4",
                      "--trained-frames", "4", "8", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("slowfast_tiny, 32 px") and len(lines) == 3
    assert "SLOWFAST" in lines[1] and "(branch 4)" in lines[1] and "(branch 16)" in lines[2]
