"""The TEA family's behaviour beyond parity: registry, temporal operations, per-video isolation, statelessness,
branch routing and statistics, input checks, ImageNet Res2Net initialisation, detection of official files, cost."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.cost import count_multiply_adds, weight_alteration_share
from model import (
    BranchNorm,
    branch_scope,
    build_model,
    build_param_groups,
    count_parameters,
    distillation_loss,
    model_family,
    model_names,
)
from model.tea import TemporalShiftConv, is_official_tea_state_dict

FFN_FRAMES = (4, 8, 16)
CLASSES = 5
SIZE = 32
CROP = 224
# TEA paper (Li et al., CVPR 2020), the Something-Something comparison table: TEA (Res2Net-50) at 224 x 224, one
# clip, one crop: 35 GFLOPs at 8 frames, 70 GFLOPs at 16 frames.
TEA_PAPER_MULTIPLY_ADDS = {8: 35e9, 16: 70e9}
PAPER_TOLERANCE = 0.05


def tiny(trained_frames=FFN_FRAMES, seed: int = 0, **options) -> nn.Module:
    """A tea_tiny model with random (not identity) temporal convolutions, so that every frame matters."""
    torch.manual_seed(seed)
    model = build_model("tea_tiny", CLASSES, trained_frames=trained_frames, **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, TemporalShiftConv):
                module.weight.normal_(1.0 / 3.0, 0.2)
    return model


def videos_by_frames(num_videos: int = 4, seed: int = 1) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {frames: torch.randn(num_videos, frames, 3, SIZE, SIZE, generator=generator) for frames in FFN_FRAMES}


def freeze_norms(model: nn.Module) -> nn.Module:
    """Training mode with BatchNorm in evaluation mode and no dropout (training arithmetic, per-video statistics)."""
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.Dropout)):
            module.eval()
    return model


@pytest.fixture(scope="module")
def res2net50() -> nn.Module:
    return build_model("tea_res2net50", 174).eval()


def test_registry_names_family_and_config_rebuild() -> None:
    assert {"tea_res2net50", "tea_tiny"} <= set(model_names())
    assert model_family("tea_res2net50") == model_family("tea_tiny") == "tea"
    model = build_model("tea_tiny", CLASSES, trained_frames=(8, 4), temporal_mode="official", dropout=0.2)
    assert model.config == {"arch": "tea_tiny", "num_classes": CLASSES, "trained_frames": [4, 8], "pretrained": None,
                            "temporal_mode": "official", "dropout": 0.2, "private_norms": True}
    rebuilt = build_model(**model.config)
    assert [name for name, _ in rebuilt.named_parameters()] == [name for name, _ in model.named_parameters()]
    assert model.classifier is model.fc and model.input_spec.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="temporal_mode='by-batch' is not one of"):
        build_model("tea_tiny", CLASSES, temporal_mode="by-batch")
    with pytest.raises(ValueError, match="this model takes"):
        build_model("tea_tiny", CLASSES, shift_mode="official")


def test_tiny_variant_layout_size_and_norm_ablation() -> None:
    vanilla = build_model("tea_tiny", CLASSES)
    ffn = build_model("tea_tiny", CLASSES, trained_frames=FFN_FRAMES)
    shared = build_model("tea_tiny", CLASSES, trained_frames=FFN_FRAMES, private_norms=False)
    assert 100_000 < count_parameters(vanilla) < 300_000
    assert count_parameters(shared) == count_parameters(vanilla) < count_parameters(ffn)
    assert not any(".norms." in name for name in shared.state_dict())
    assert [len(getattr(ffn, name)) for name in ffn.layer_names] == [1, 1, 2, 1]
    assert ffn.layer3[1].downsample_conv is None and not ffn.layer3[1].first
    norms = [module for module in ffn.modules() if isinstance(module, BranchNorm)]
    assert len(norms) == 1 + 5 * 7 + 4  # the stem's; per block bn1, three group BNs, bn3, ME's two; 4 downsamples
    assert not any(".wa." in name for name in ffn.state_dict())  # TEA-FFN has no Weight Alteration
    with torch.no_grad():
        assert ffn.eval()(torch.randn(2, 3, 3, SIZE, SIZE)).shape == (2, CLASSES)


def test_temporal_shift_conv_is_a_depthwise_conv_over_time_per_clip() -> None:
    torch.manual_seed(0)
    shift = TemporalShiftConv(6, "shift")
    expected_taps = torch.tensor([[0.0, 0.0, 1.0]] * 3 + [[1.0, 0.0, 0.0]] * 3)
    assert torch.equal(shift.weight[:, 0], expected_taps)
    assert torch.equal(TemporalShiftConv(5, "shift").weight[4, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(TemporalShiftConv(4, "identity").weight[:, 0, 1], torch.ones(4))
    with torch.no_grad():
        shift.weight.normal_()
    frames = torch.randn(3 * 5, 6, 4, 3, dtype=torch.float64, requires_grad=True)
    shift = shift.double()
    for clip_frames in (1, 5):
        clips = frames.view(-1, clip_frames, 6, 4, 3).permute(0, 3, 4, 2, 1).reshape(-1, 6, clip_frames)
        reference = nn.functional.conv1d(clips, shift.weight, padding=1, groups=6)
        reference = reference.view(-1, 4, 3, 6, clip_frames).permute(0, 4, 3, 1, 2).reshape(frames.shape)
        torch.testing.assert_close(shift(frames, clip_frames), reference, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, w: TemporalShiftConv.forward(_with_weight(shift, w), x, 5),
                                    (frames[:10].detach().clone().requires_grad_(),
                                     shift.weight.detach().clone().requires_grad_()))
    with pytest.raises(ValueError, match="cannot group 15 frames in clips of 4"):
        shift(frames, 4)
    half = torch.randn(10, 6, 4, 3).bfloat16()  # under autocast the activations keep their dtype
    assert shift.float()(half, 5).dtype == torch.bfloat16


def _with_weight(shift: TemporalShiftConv, weight: torch.Tensor) -> TemporalShiftConv:
    clone = TemporalShiftConv(shift.channels, "identity").double()
    del clone.weight
    clone.weight = weight
    return clone


@pytest.mark.parametrize("temporal_mode", ["per-video", "official"])
def test_training_outputs_are_the_same_after_an_evaluation_call(temporal_mode: str) -> None:
    """No module changes state across calls (the official modules switch their clip length on evaluation)."""
    model = tiny(temporal_mode=temporal_mode)
    videos = videos_by_frames()
    model.train()
    model.dropout.eval()
    with torch.no_grad():
        before = model(videos)
        model.eval()(videos[8][:1, :6])
        model.train()
        model.dropout.eval()
        after = model(videos)
    for frames in FFN_FRAMES:
        assert torch.equal(before[frames], after[frames]), frames


def test_changing_one_video_leaves_the_others_logits_unchanged() -> None:
    """ME differences and the shift convolutions never cross videos, in evaluation and in training arithmetic."""
    model = tiny()
    videos = videos_by_frames()
    changed = {frames: batch.clone() for frames, batch in videos.items()}
    for batch in changed.values():
        batch[1] = torch.randn_like(batch[1])
    with torch.no_grad():
        for frames in (2, 6, 16):
            clip = videos[16][:, :frames]
            other = changed[16][:, :frames]
            first, second = model.eval()(clip), model(other)
            assert torch.equal(first[[0, 2, 3]], second[[0, 2, 3]]) and not torch.equal(first[1], second[1])
        first, second = freeze_norms(model)(videos), model(changed)
    for frames in FFN_FRAMES:
        assert torch.equal(first[frames][[0, 2, 3]], second[frames][[0, 2, 3]]), frames
        assert not torch.equal(first[frames][1], second[frames][1])


def test_official_temporal_mode_lets_videos_leak_in_the_lower_branches_only() -> None:
    """The test above can fail: with official grouping video 1 reaches videos 0, 2 and 3 at 4F (clips of 16)."""
    model = freeze_norms(tiny(temporal_mode="official"))
    videos = videos_by_frames()
    changed = {frames: batch.clone() for frames, batch in videos.items()}
    for batch in changed.values():
        batch[1] = torch.randn_like(batch[1])
    with torch.no_grad():
        first, second = model(videos), model(changed)
    assert not torch.allclose(first[4][[0, 2, 3]], second[4][[0, 2, 3]])  # 4 videos per 16-frame clip
    assert not torch.allclose(first[8][0], second[8][0])  # videos 0 and 1 share a clip
    assert torch.equal(first[8][[2, 3]], second[8][[2, 3]])
    assert torch.equal(first[16][[0, 2, 3]], second[16][[0, 2, 3]])
    with pytest.raises(ValueError, match="cannot group 12 frames in clips of 16"):
        model({4: videos[4][:3]})
    per_video = freeze_norms(tiny())
    with torch.no_grad():
        assert not torch.allclose(per_video({4: videos[4]})[4], first[4])


def test_branch_rule_at_untrained_frame_counts() -> None:
    model = tiny().eval()
    expected = {1: 4, 2: 4, 5: 4, 6: 8, 11: 8, 12: 16, 20: 16}
    assert {frames: model.branch_for(frames) for frames in expected} == expected
    with torch.no_grad():
        for frames, branch in expected.items():
            videos = torch.randn(2, frames, 3, SIZE, SIZE)
            with branch_scope(branch):
                reference = model.forward_branch(videos, frames)
            assert torch.equal(model(videos), reference), frames


def test_training_touches_only_its_branch_statistics_and_gradients_reach_the_temporal_parts() -> None:
    model = tiny().train()
    norms = [module for module in model.modules() if isinstance(module, BranchNorm)]
    before = {key: [norm.norms[key].running_mean.clone() for norm in norms] for key in ("4", "8", "16")}
    logits = model({8: videos_by_frames(2)[8]})
    distillation_loss(logits, torch.tensor([0, 3]))[0].backward()
    for key, stats in before.items():
        changed = [not torch.equal(stat, norm.norms[key].running_mean) for stat, norm in zip(stats, norms)]
        assert all(changed) if key == "8" else not any(changed), key
    for name, parameter in model.named_parameters():
        in_other_branch = ".norms.4." in name or ".norms.16." in name
        assert (parameter.grad is None) == in_other_branch, name
    groups = {group["name"]: group for group in build_param_groups(model, official_groups=True)}
    shift_weights = {id(module.weight) for module in model.modules() if isinstance(module, TemporalShiftConv)}
    assert shift_weights <= {id(parameter) for parameter in groups["conv_weight"]["params"]}
    assert groups["head_weight"]["lr_mult"] == 5.0 and groups["head_bias"]["lr_mult"] == 10.0


def test_one_line_errors_for_invalid_frames_sizes_and_shapes() -> None:
    model = tiny().eval()
    with pytest.raises(ValueError, match="does not run at 0 frames"):
        model(torch.randn(1, 0, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="16x16 px are smaller than this model's minimum 32 px"):
        model(torch.randn(1, 4, 3, 16, 16))
    with pytest.raises(ValueError, match=r"must be \(N, T, 3, H, W\)"):
        model(torch.randn(4, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="not a trained frame count"):
        model({6: torch.randn(1, 6, 3, SIZE, SIZE)})
    with torch.no_grad():
        assert model(torch.randn(1, 1, 3, 48, 40)).shape == (1, CLASSES)  # one frame, any size from 32 px


def test_res2net50_runs_at_sizes_the_official_fixed_pool_refuses(res2net50: nn.Module) -> None:
    """The official head is a fixed 7x7 pool (193 to 224 px only); ours pools adaptively."""
    with torch.no_grad():
        logits = res2net50(torch.randn(1, 2, 3, 112, 112))
    assert logits.shape == (1, 174) and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("frames", sorted(TEA_PAPER_MULTIPLY_ADDS))
def test_res2net50_multiply_adds_match_the_tea_paper(res2net50: nn.Module, frames: int) -> None:
    counted = count_multiply_adds(res2net50, frames, CROP)
    paper = TEA_PAPER_MULTIPLY_ADDS[frames]
    assert abs(counted - paper) <= PAPER_TOLERANCE * paper, f"{counted / 1e9:.2f}G against the paper's {paper / 1e9}G"
    assert weight_alteration_share(res2net50, frames, CROP) is None


def test_ffn_costs_what_tea_costs() -> None:
    """Private BatchNorms add no multiply-adds: each branch counts what vanilla TEA counts (6F runs the 8F branch)."""
    vanilla = build_model("tea_tiny", CLASSES).eval()
    ffn = build_model("tea_tiny", CLASSES, trained_frames=FFN_FRAMES).eval()
    for frames in (1, 6, 16):
        assert count_multiply_adds(ffn, frames, SIZE) == count_multiply_adds(vanilla, frames, SIZE) > 0
    assert count_multiply_adds(vanilla, 16, SIZE) == 16 * count_multiply_adds(vanilla, 1, SIZE)


def test_cost_command_line_prints_the_family_and_its_ffn(capsys: pytest.CaptureFixture) -> None:
    from engine.cost import main

    assert main(["--arch", "tea_tiny", "--crop-size", "32", "--frames", "2", "16", "--num-classes", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tea_tiny, 32 px") and len(lines) == 3
    assert "TEA" in lines[1] and "(branch 4)" in lines[1] and "(branch 16)" in lines[2]
    assert "Weight Alteration" not in "".join(lines)


def res2net_layout(model: nn.Module, classes: int = 1000) -> dict[str, torch.Tensor]:
    """A vanilla TEA's backbone under the Res2Net ImageNet checkpoint's names (no ME, no shift convs, a 1000-way fc)."""
    renamed = {}
    for key, value in model.state_dict().items():
        if ".me." in key or ".shifts." in key or key.startswith("fc."):
            continue
        key = key.replace("downsample_conv.", "downsample.0.").replace("downsample_bn.", "downsample.1.")
        renamed[key] = torch.randn_like(value) if value.is_floating_point() else value
    renamed["fc.weight"] = torch.randn(classes, model.feature_dim)
    renamed["fc.bias"] = torch.randn(classes)
    return renamed


@pytest.mark.parametrize("trained_frames", [None, FFN_FRAMES])
def test_res2net_imagenet_file_initialises_the_backbone(tmp_path: Path, trained_frames) -> None:
    source = res2net_layout(build_model("tea_tiny", CLASSES))
    path = tmp_path / "res2net_tiny.pth"
    torch.save(source, path)
    model = build_model("tea_tiny", CLASSES, trained_frames=trained_frames, pretrained=str(path))
    ours = model.state_dict()
    report = model.backbone_load
    branches = [f".norms.{frames}" for frames in trained_frames] if trained_frames else [""]
    for key in ("layer2.0.bns.1", "layer1.0.downsample.1", "bn1", "layer4.0.bn3"):
        ours_key = key.replace("downsample.1", "downsample_bn")
        for branch in branches:
            for stat in ("weight", "bias", "running_mean", "running_var"):
                assert torch.equal(ours[f"{ours_key}{branch}.{stat}"], source[f"{key}.{stat}"]), (key, branch)
    assert torch.equal(ours["layer3.0.convs.2.weight"], source["layer3.0.convs.2.weight"])
    assert torch.equal(ours["layer4.0.downsample_conv.weight"], source["layer4.0.downsample.0.weight"])
    assert report.dropped == ["fc.weight", "fc.bias"]
    assert report.left_at_init and all(key.startswith("fc.") or ".me." in key or ".shifts." in key
                                       for key in report.left_at_init)
    assert {"fc.weight", "layer1.0.me.conv2.weight", "layer4.0.shifts.3.weight"} <= set(report.left_at_init)
    assert set(report.loaded).isdisjoint(report.left_at_init)
    assert {key for key in ours if not key.endswith("num_batches_tracked")} <= {*report.loaded, *report.left_at_init}
    assert torch.equal(ours["layer1.0.shifts.3.weight"], TemporalShiftConv(4, "shift").weight)


def test_res2net_file_of_another_architecture_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "resnet_tiny.pth"
    torch.save(build_model("tiny", CLASSES).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit arch='tea_tiny'") as error:
        build_model("tea_tiny", CLASSES, pretrained=str(path))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="res2net50_26w_4s-06e79181.pth"):
        build_model("tea_tiny", CLASSES, pretrained="imagenet")


def test_detection_of_official_files_from_key_names() -> None:
    ffn = {"base_model.layer1.0.me.conv1.weight": 0, "base_model.bn1_16.weight": 0, "base_model.bn1_4.weight": 0,
           "base_model.bn1_8.weight": 0, "new_fc.weight": 0}
    vanilla = {"module.base_model.layer1.0.me.conv1.weight": 0, "module.base_model.bn1.weight": 0}
    assert is_official_tea_state_dict(ffn) == FFN_FRAMES
    assert is_official_tea_state_dict({"module." + key: value for key, value in ffn.items()}) == FFN_FRAMES
    assert is_official_tea_state_dict({"state_dict": vanilla, "epoch": 3}) is None
    assert is_official_tea_state_dict(res2net_layout(build_model("tea_tiny", CLASSES))) is False
    tsm_ffn = {"base_model.bn1_4.weight": 0, "base_model.layer1.0.adaconv_4.weight": 0}
    assert is_official_tea_state_dict(tsm_ffn) is False
    assert is_official_tea_state_dict({}) is False
