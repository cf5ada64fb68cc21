"""Single-image pretraining of every family through the registry, and the inflation of temporal kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pretrain
from engine.backbone_cache import backbone_settings
from model import build_model
from model.ffn_parts import branch_scope
from model.inflation import inflate_temporal_kernels
from model.registry import image_pretraining, image_pretraining_models

SMOKE_ARGS = ["--images-per-class", "2", "--val-images-per-class", "1", "--epochs", "1", "--batch-size", "8",
              "--max-steps", "2", "--threads", "1"]
# arch -> (trained frames of its FFN, model keys a pretrained file leaves at init besides the classifier and
# Weight Alteration: TEA's motion excitation and temporal shift convolutions, as from an ImageNet Res2Net)
FAMILY_CASES = {
    "tea_tiny": ((4, 8, 16), (".me.", ".shifts.")),
    "slowfast_tiny": ((8, 16, 32), ()),
    "uniformer_tiny": ((4, 8, 16), ()),
}
CLASSIFIER_PARTS = ("fc.", "head.")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, str]:
    """Each family's backbone, pretrained for two steps on the CPU: {arch: checkpoint path}."""
    root = tmp_path_factory.mktemp("pretrain")
    paths = {}
    for arch in FAMILY_CASES:
        args = pretrain.build_parser().parse_args(["--output-root", str(root), "--arch", arch, *SMOKE_ARGS])
        paths[arch] = str(pretrain.pretrain(args))
    return paths


def test_every_family_has_a_single_image_pretraining():
    assert {"tiny", "tea_tiny", "slowfast_tiny", "uniformer_tiny"} <= set(image_pretraining_models())
    with pytest.raises(ValueError, match="not a registered model"):
        image_pretraining("no_such_model")


def test_the_inflation_rule_is_part_of_the_cache_key():
    """A 3D family's backbone settings name its inflation; TSM's settings (and cache folder) carry no new key."""
    assert backbone_settings({"arch": "slowfast_tiny"})["inflation"] == "mean"
    assert backbone_settings({"arch": "uniformer_tiny"})["inflation"] == "mean"
    assert "inflation" not in backbone_settings({}) and "inflation" not in backbone_settings({"arch": "tea_tiny"})


@pytest.mark.parametrize("arch", list(FAMILY_CASES))
@pytest.mark.parametrize("with_ffn", [False, True], ids=["vanilla", "ffn"])
def test_a_family_backbone_fills_every_backbone_key_and_every_private_norm(backbones, arch, with_ffn):
    trained_frames, left_by_design = FAMILY_CASES[arch]
    model = build_model(arch, 12, trained_frames=trained_frames if with_ffn else None, pretrained=backbones[arch])
    report = model.backbone_load
    assert report.dropped and all(key.startswith(CLASSIFIER_PARTS) for key in report.dropped)
    for key in report.left_at_init:
        assert key.startswith(CLASSIFIER_PARTS) or ".wa.convs." in key or any(part in f".{key}"
                                                                              for part in left_by_design), key
    assert any(key.startswith(CLASSIFIER_PARTS) for key in report.left_at_init)
    if not with_ffn:
        return
    state = model.state_dict()
    private = [key for key in report.loaded if ".norms." in key]
    assert private
    for key in private:
        head, leaf = key.split(".norms.")
        first = f"{head}.norms.{trained_frames[0]}.{leaf.split('.', 1)[1]}"
        assert torch.equal(state[key], state[first]), key


@pytest.mark.parametrize("arch", ["slowfast_tiny", "uniformer_tiny"])
def test_3d_backbones_spread_each_temporal_kernel_evenly(backbones, arch):
    """I3D's mean inflation: every tap of a temporal kernel holds the same weight (the centre tap / k)."""
    model = build_model(arch, 12, pretrained=backbones[arch])
    inflated = [module for module in model.modules() if isinstance(module, nn.Conv3d) and module.kernel_size[0] > 1]
    assert inflated
    for conv in inflated:
        taps = conv.weight.unbind(2)
        assert all(torch.equal(tap, taps[0]) for tap in taps)


def test_the_slowfast_image_network_reads_one_frame_through_both_pathways():
    pretraining = image_pretraining("slowfast_tiny")
    network = pretraining.build(5).eval()
    assert network(torch.randn(2, 1, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="one-frame"):
        network(torch.randn(2, 4, 3, 32, 32))


def test_the_tea_image_network_is_its_res2net_without_temporal_modules():
    network = image_pretraining("tea_tiny").build(5)
    keys = list(network.state_dict())
    assert not any(".me." in key or ".shifts." in key for key in keys)
    exported = image_pretraining("tea_tiny").export(network)
    assert any(".downsample.0.weight" in key for key in exported) and not any("downsample_conv" in key
                                                                              for key in exported)


@pytest.mark.parametrize("rule", ["mean", "centre"])
def test_inflation_keeps_a_static_clip_where_the_kernel_sees_no_padding(rule):
    """A conv trained on one frame (only its centre tap counts) inflated: on a static clip its output equals the
    2D output at every frame (centre) or at every frame whose window lies inside the clip (mean)."""
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 4, (3, 3, 3), padding=(1, 1, 1), bias=False)
    image = torch.randn(1, 3, 1, 8, 8)
    expected = conv(image)  # one frame: the centre tap alone
    assert inflate_temporal_kernels(conv, rule) == ["weight"]
    clip = image.expand(1, 3, 7, 8, 8)
    output = conv(clip)
    inside = slice(0, 7) if rule == "centre" else slice(1, 6)
    assert torch.allclose(output[:, :, inside], expected.expand_as(output[:, :, inside]), atol=1e-6)
    if rule == "mean":
        assert not torch.allclose(output[:, :, :1], expected, atol=1e-3)  # the clip's ends see the zero padding


def test_inflation_refuses_unknown_rules_and_off_centre_padding():
    with pytest.raises(ValueError, match="rule"):
        inflate_temporal_kernels(nn.Conv3d(1, 1, 3, padding=1), "repeat")
    with pytest.raises(ValueError, match="padding"):
        inflate_temporal_kernels(nn.Conv3d(1, 1, (3, 1, 1), padding=(0, 0, 0)), "mean")
    assert inflate_temporal_kernels(nn.Conv3d(1, 1, (1, 3, 3), padding=(0, 1, 1)), "mean") == []


def test_branch_scope_is_not_needed_by_the_image_networks():
    """The image networks are vanilla: they run without an FFN branch in scope."""
    for arch in FAMILY_CASES:
        network = image_pretraining(arch).build(3).eval()
        with branch_scope(None):
            assert network(torch.randn(1, 1, 3, 32, 32)).shape == (1, 3)
