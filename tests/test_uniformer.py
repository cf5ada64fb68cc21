"""UniFormer and UniFormer-FFN beyond parity: layout, branch rule, input checks, statelessness, branch-private
statistics, stochastic depth, pretrained initialisation and cost (parity itself: test_uniformer_parity.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from engine.cost import count_multiply_adds, main as cost_main
from model import BranchNorm, WeightAlteration, branch_scope, build_model, model_family
from model.tsm_resnet import count_parameters
from model.official_checkpoints import translate_official_key
from model.uniformer import UNIFORMER_SPECS

FFN_FRAMES = (4, 8, 16)
SSV1_CLASSES = 174
KINETICS_CLASSES = 600
TINY = "uniformer_tiny"
SIZE = 32
# Official module sizes with 174 classes (FFN-pytorch, Transformer_Network/slowfast/models/uniformer_FFN.py and
# uniformer.py, UniFormer-S config).
OFFICIAL_FFN_PARAMETERS = 21_343_406
OFFICIAL_VANILLA_PARAMETERS = 21_284_462
OFFICIAL_WA_PARAMETERS_PER_BRANCH = 4_800
# UniFormer paper (Li et al., ICLR 2022), Kinetics-400 table: UniFormer-S 16x4 at 224 px, 41.8 G per view
# (the UniFormer repository lists 167 G for 16x1x4 views; 400 classes).
PAPER_UNIFORMER_S_16F_MULTIPLY_ADDS = 41.8e9
PAPER_TOLERANCE = 0.05
# Our names that differ from the official vanilla UniFormer's (the convolution blocks' three convolutions).
OUR_TO_OFFICIAL_CONV_NAMES = {"value_conv": "conv1", "affinity_conv": "attn", "fusion_conv": "conv2"}


def videos_of(frames: int, num_videos: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Random float videos (N, T, 3, size, size)."""
    generator = torch.Generator().manual_seed(seed + frames)
    return torch.randn(num_videos, frames, 3, size, size, generator=generator)


@pytest.fixture(scope="module")
def uniformer_s_ffn() -> nn.Module:
    return build_model("uniformer_s", SSV1_CLASSES, trained_frames=FFN_FRAMES).eval()


@pytest.fixture(scope="module")
def uniformer_s_vanilla() -> nn.Module:
    return build_model("uniformer_s", SSV1_CLASSES).eval()


@pytest.fixture()
def tiny_ffn() -> nn.Module:
    torch.manual_seed(0)
    return build_model(TINY, 5, trained_frames=FFN_FRAMES).eval()


def test_registry_family_input_spec_and_rebuild() -> None:
    assert model_family("uniformer_s") == model_family(TINY) == "uniformer"
    model = build_model(TINY, 5, trained_frames=(16, 4, 8), drop_path_rate=0.1)
    assert model.trained_frames == FFN_FRAMES and model.classifier is model.head
    assert model.config == {"arch": TINY, "num_classes": 5, "trained_frames": [4, 8, 16], "pretrained": None,
                            "drop_path_rate": 0.1, "private_norms": True, "weight_alteration": True}
    rebuilt = build_model(**model.config)
    assert [name for name, _ in rebuilt.named_parameters()] == [name for name, _ in model.named_parameters()]
    spec = model.input_spec
    assert (spec.mean, spec.std, spec.channel_order) == ((0.45,) * 3, (0.225,) * 3, "RGB")
    assert (spec.frames_multiple, spec.min_frames, spec.min_size) == (1, 1, 32)
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_model(TINY, 5, drop_path_rate=1.0)


def test_uniformer_s_parameter_counts_and_ffn_parts_match_the_official_model(uniformer_s_ffn: nn.Module,
                                                                             uniformer_s_vanilla: nn.Module) -> None:
    assert count_parameters(uniformer_s_ffn) == OFFICIAL_FFN_PARAMETERS
    assert count_parameters(uniformer_s_vanilla) == OFFICIAL_VANILLA_PARAMETERS
    norms = [module for module in uniformer_s_ffn.modules() if isinstance(module, BranchNorm)]
    kinds = [type(norm.norms["4"]) for norm in norms]
    assert kinds.count(nn.BatchNorm3d) == 15 and kinds.count(nn.LayerNorm) == 26 and len(kinds) == 41
    assert all(list(norm.norms) == ["4", "8", "16"] for norm in norms)
    assert uniformer_s_ffn.patch_embed1.norm.norms["8"].eps == 1e-5  # PyTorch's default, as the official code
    assert uniformer_s_ffn.blocks3[0].norm1.norms["8"].eps == 1e-6
    alterations = [module for module in uniformer_s_ffn.modules() if isinstance(module, WeightAlteration)]
    assert len(alterations) == sum(UNIFORMER_SPECS["uniformer_s"].depths) == 18
    weights = [alteration.convs["16"].weight for alteration in alterations]
    assert sum(weight.numel() for weight in weights) == OFFICIAL_WA_PARAMETERS_PER_BRANCH
    assert all(weight.shape[1:] == (1, 1, 1, 1) for weight in weights)
    stacked = torch.cat([weight.detach().flatten() for weight in weights])
    assert 0.5e-3 < float(stacked.std()) < 2e-3  # N(0, 1e-3), what the official code runs


def test_initialisation_follows_the_official_model(uniformer_s_ffn: nn.Module) -> None:
    head = uniformer_s_ffn.head
    assert 0.015 < float(head.weight.detach().std()) < 0.025 and not head.bias.any()
    layer_norm = uniformer_s_ffn.blocks4[0].norm2.norms["4"]
    assert torch.equal(layer_norm.weight, torch.ones(512)) and torch.equal(layer_norm.bias, torch.zeros(512))


def test_uniformer_s_multiply_adds_match_the_paper(uniformer_s_ffn: nn.Module, uniformer_s_vanilla: nn.Module) -> None:
    """torch's FLOP counter on vanilla UniFormer-S, 16 frames at 224 px (the paper's head has 400 classes, ours
    174: 0.1 M multiply-adds apart, 0.0003% of the count)."""
    counted = count_multiply_adds(uniformer_s_vanilla, 16, 224)
    assert abs(counted - PAPER_UNIFORMER_S_16F_MULTIPLY_ADDS) <= PAPER_TOLERANCE * PAPER_UNIFORMER_S_16F_MULTIPLY_ADDS
    with_alteration = count_multiply_adds(uniformer_s_ffn, 16, 224)
    assert counted < with_alteration < 1.001 * counted  # the 18 depthwise 1x1x1 convs of Weight Alteration


def test_cost_command_runs_for_the_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost_main(["--arch", TINY, "--frames", "2", "16", "--crop-size", "32", "--num-classes", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{TINY}, 32 px, 1 view(s) per video: multiply-adds (G) per video"
    assert "16F  UNIFORMER" in lines[2] and "(branch 16)  Weight Alteration counted" in lines[2]


def test_any_frame_count_and_size_runs_and_bad_input_fails_in_one_line(tiny_ffn: nn.Module) -> None:
    with torch.no_grad():
        for frames, height, width in ((1, 32, 32), (3, 32, 32), (5, 33, 40), (16, 48, 32), (40, 32, 32)):
            logits = tiny_ffn(torch.randn(2, frames, 3, height, width))
            assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="smaller than this model's minimum 32 px"):
        tiny_ffn(torch.randn(1, 4, 3, 31, 64))
    with pytest.raises(ValueError, match="does not run at 0 frames"):
        tiny_ffn(torch.randn(1, 0, 3, 32, 32))
    with pytest.raises(ValueError, match=r"must be \(N, T, 3, H, W\)"):
        tiny_ffn(torch.randn(1, 3, 4, 32, 32))


def test_first_patch_embedding_halves_time_with_ceil(tiny_ffn: nn.Module) -> None:
    shapes = []
    handle = tiny_ffn.patch_embed1.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
    try:
        with torch.no_grad():
            for frames in (1, 2, 5, 16):
                tiny_ffn(videos_of(frames, num_videos=1))
    finally:
        handle.remove()
    assert [shape[2] for shape in shapes] == [1, 1, 3, 8]
    assert shapes[0][1:] == (16, 1, 8, 8)


def test_untrained_frame_counts_run_the_nearest_branch(tiny_ffn: nn.Module) -> None:
    expected = {1: 4, 2: 4, 5: 4, 6: 8, 7: 8, 11: 8, 12: 16, 24: 16}
    with torch.no_grad():
        for frames, branch in expected.items():
            assert tiny_ffn.branch_for(frames) == branch
            videos = videos_of(frames)
            with branch_scope(branch):
                direct = tiny_ffn.forward_branch(videos, frames)
            torch.testing.assert_close(tiny_ffn(videos), direct, rtol=0, atol=0)
        for frames, other_branch in ((4, 8), (8, 16), (16, 4)):
            videos = videos_of(frames)
            with branch_scope(other_branch):
                other = tiny_ffn.forward_branch(videos, frames)
            assert not torch.allclose(tiny_ffn(videos), other)


def test_calls_leave_no_state_behind(tiny_ffn: nn.Module) -> None:
    """A training call gives the same logits before and after an eval call; eval logits do not depend on calls
    at other frame counts."""
    batch = {frames: videos_of(frames) for frames in FFN_FRAMES}
    tiny_ffn.train()
    first = tiny_ffn(batch)
    tiny_ffn.eval()
    with torch.no_grad():
        evaluated = tiny_ffn(videos_of(6))
        tiny_ffn(videos_of(16))
        torch.testing.assert_close(tiny_ffn(videos_of(6)), evaluated, rtol=0, atol=0)
    tiny_ffn.train()
    second = tiny_ffn(batch)
    for frames in FFN_FRAMES:
        torch.testing.assert_close(second[frames], first[frames], rtol=0, atol=0)


def test_a_training_call_updates_only_its_own_branch_statistics(tiny_ffn: nn.Module) -> None:
    before = copy.deepcopy(tiny_ffn.state_dict())
    tiny_ffn.train()
    with torch.no_grad():
        tiny_ffn({4: videos_of(4)})
    after = tiny_ffn.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    statistics = {key for key in before if ".norms.4." in key and key.rsplit(".", 1)[1] in
                  ("running_mean", "running_var", "num_batches_tracked")}
    assert changed == statistics and len(statistics) == 3 * 5  # 2 BatchNorms per conv block x 2 blocks + final


def test_stochastic_depth_rises_linearly_and_acts_only_in_training() -> None:
    model = build_model(TINY, 5, trained_frames=FFN_FRAMES, drop_path_rate=0.6).train()
    layers = [module for module in model.modules() if isinstance(module, StochasticDepth)]
    assert [round(layer.p, 6) for layer in layers] == [0.0, 0.2, 0.4, 0.6]
    assert all(layer.mode == "row" for layer in layers)
    videos = videos_of(8, num_videos=8)
    torch.manual_seed(1)
    first = model({8: videos})[8]
    torch.manual_seed(2)
    assert not torch.allclose(model({8: videos})[8], first)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(videos), model(videos), rtol=0, atol=0)
    plain = build_model(TINY, 5, trained_frames=FFN_FRAMES)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(videos), model(videos), rtol=0, atol=0)


def official_vanilla_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A vanilla model's state dict under the official UniFormer names, every float tensor redrawn at random."""
    generator = torch.Generator().manual_seed(7)
    exported = {}
    for key, value in model.state_dict().items():
        name = key
        for ours, official in OUR_TO_OFFICIAL_CONV_NAMES.items():
            name = name.replace(f".{ours}.", f".{official}.")
        if value.is_floating_point():
            value = torch.rand(value.shape, generator=generator) + 0.5
        exported[name] = value.clone()
    return exported


def test_official_key_rules_invert_the_export() -> None:
    vanilla = build_model(TINY, 5)
    exported = official_vanilla_state_dict(vanilla)
    assert "blocks1.0.attn.weight" in exported and "blocks3.0.attn.qkv.weight" in exported
    assert {translate_official_key(vanilla, key) for key in exported} == set(vanilla.state_dict())


def test_kinetics_initialisation_fills_every_private_norm_and_keeps_the_head(tmp_path: Path) -> None:
    """A K600-style file (vanilla names, "module." prefix, under "model", 600-class head) initialises an FFN."""
    source = official_vanilla_state_dict(build_model(TINY, KINETICS_CLASSES))
    path = tmp_path / "uniformer_tiny_k600.pth"
    torch.save({"model": {f"module.{key}": value for key, value in source.items()}}, path)
    torch.manual_seed(3)
    model = build_model(TINY, SSV1_CLASSES, trained_frames=FFN_FRAMES)
    initial = copy.deepcopy(model.state_dict())
    load = model.load_pretrained(str(path))
    state = model.state_dict()
    for frames in ("4", "8", "16"):
        for ours, official in (("blocks1.0.norm1.norms.{}.running_var", "blocks1.0.norm1.running_var"),
                               ("blocks4.0.norm2.norms.{}.weight", "blocks4.0.norm2.weight"),
                               ("patch_embed2.norm.norms.{}.bias", "patch_embed2.norm.bias"),
                               ("norm.norms.{}.running_mean", "norm.running_mean")):
            assert torch.equal(state[ours.format(frames)], source[official])
    assert torch.equal(state["blocks2.0.affinity_conv.weight"], source["blocks2.0.attn.weight"])
    left = {key for key in initial if key.startswith("head.") or ".wa.convs." in key}
    assert set(load.left_at_init) == left and len(left) == 2 + 3 * 4
    assert all(torch.equal(state[key], initial[key]) for key in left)
    assert load.dropped == ["module.head.weight", "module.head.bias"]
    assert set(load.loaded) == set(state) - left
    assert "14 keys" in load.summary()
    vanilla = build_model(TINY, SSV1_CLASSES, pretrained=str(path))
    assert vanilla.backbone_load.left_at_init == ["head.weight", "head.bias"] and vanilla.config["pretrained"] is None


def test_pretrained_file_that_does_not_fit_fails_in_one_line(tmp_path: Path) -> None:
    source = official_vanilla_state_dict(build_model(TINY, KINETICS_CLASSES))
    del source["blocks3.0.attn.proj.weight"]
    path = tmp_path / "partial.pth"
    torch.save(source, path)
    with pytest.raises(ValueError, match=r"does not fit this UniFormer: 1 model keys missing"):
        build_model(TINY, 5, trained_frames=FFN_FRAMES).load_pretrained(str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(TINY, 5).load_pretrained(str(tmp_path / "absent.pth"))
