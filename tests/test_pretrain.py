"""The backbone pretraining step (pretrain.py), the appearance images, and train.py's ablation flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pretrain
import train
from model import build_model, distillation_loss
from model.tsm_resnet import to_torchvision_state_dict
from model.ffn_parts import BranchNorm, WeightAlteration
from model.tsm_resnet import TemporalBlock
from preprocess.synthetic_images import APPEARANCE_CLASSES, SIZE_RANGES, appearance_dataset, render_appearance_image

SMOKE_ARGS = ["--images-per-class", "2", "--val-images-per-class", "1", "--epochs", "1", "--batch-size", "8",
              "--max-steps", "3", "--threads", "1"]
HEAD_KEYS = ["fc.weight", "fc.bias"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> tuple:
    """A backbone pretrained for three steps on the CPU: (checkpoint path, cache root)."""
    root = tmp_path_factory.mktemp("pretrain")
    args = pretrain.build_parser().parse_args(["--output-root", str(root), *SMOKE_ARGS])
    return pretrain.pretrain(args), root


def test_appearance_images_are_deterministic_and_balanced():
    images, labels = appearance_dataset(3, seed=5)
    again, _ = appearance_dataset(3, seed=5)
    other, _ = appearance_dataset(3, seed=6)
    assert images.shape == (3 * len(APPEARANCE_CLASSES), 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert np.bincount(labels).tolist() == [3] * len(APPEARANCE_CLASSES)


def test_size_classes_draw_objects_of_different_areas():
    """The object (brighter than the dark background) covers more pixels in "large" classes than in "small" ones."""
    areas: dict[str, list[int]] = {size: [] for size in SIZE_RANGES}
    for class_index, spec in enumerate(APPEARANCE_CLASSES):
        for index in range(6):
            image = render_appearance_image(class_index, np.random.default_rng([1, class_index, index]))
            background = np.median(image.reshape(-1, 3), axis=0)
            areas[spec.size].append(int((np.abs(image.astype(int) - background).max(axis=2) > 60).sum()))
    assert np.mean(areas["large"]) > 2.5 * np.mean(areas["small"])


def test_pretraining_writes_a_cached_torchvision_style_checkpoint(backbone, capsys):
    path, root = backbone
    record = json.loads((path.parent / pretrain.RECORD_FILE).read_text())
    assert record["sha256"] == pretrain.file_sha256(path)
    payload = torch.load(path, weights_only=True)
    assert "conv1.weight" in payload["state_dict"] and "layer1.0.bn1.running_var" in payload["state_dict"]
    assert not any(".norms." in key for key in payload["state_dict"])
    args = pretrain.build_parser().parse_args(["--output-root", str(root), *SMOKE_ARGS])
    assert pretrain.pretrain(args) == path
    assert "reusing" in capsys.readouterr().out
    assert pretrain.cache_folder(root, {**pretrain.settings_of(args), "lr": 1.0}) != path.parent


def test_a_second_run_writes_the_same_bytes(backbone, tmp_path):
    """Same settings, same file: the SHA-256 in pretrain.json (and tfd.json) fingerprints the weights, not the run."""
    path, _ = backbone
    args = pretrain.build_parser().parse_args(["--output-root", str(tmp_path), *SMOKE_ARGS])
    again = pretrain.pretrain(args)
    assert again != path and pretrain.file_sha256(again) == pretrain.file_sha256(path)


def test_images_are_normalised_as_the_demo_backbone_was_trained():
    """The pretraining's input arithmetic, (x - 255 mean) / (255 std) on float pixels, bit for bit."""
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    mean, std = pretrain.normalisation_tensors("cpu")
    batch = pretrain.to_batch(images, torch.device("cpu"), mean, std)
    reference = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean) / std
    assert batch.shape == (4, 1, 3, 32, 32) and torch.equal(batch[:, 0], reference)


@pytest.mark.parametrize("trained_frames", [None, (4, 8, 16)], ids=["tsm", "ffn"])
def test_pretrained_backbone_loads_every_backbone_key(backbone, trained_frames):
    path, _ = backbone
    saved = torch.load(path, weights_only=True)["state_dict"]
    model = build_model("tiny", 12, trained_frames=trained_frames, pretrained=str(path))
    report = model.backbone_load
    assert report.dropped == HEAD_KEYS
    assert sorted(report.left_at_init) == sorted(
        key for key in model.state_dict() if key in HEAD_KEYS or ".wa.convs." in key)
    if trained_frames is None:
        assert sorted(report.left_at_init) == sorted(HEAD_KEYS)
    state = model.state_dict()
    for key, value in saved.items():
        if key in HEAD_KEYS:
            continue
        targets = [name for name in report.loaded if to_torchvision_name(name) == key]
        assert len(targets) == (1 if trained_frames is None or "bn" not in key and "downsample.1" not in key else 3), key
        for name in targets:
            assert torch.equal(state[name], value), name


def to_torchvision_name(key: str) -> str:
    """Our key with any private branch folded to the plain norm, under torchvision's name."""
    parts = key.split(".")
    if "norms" in parts:
        del parts[parts.index("norms"):parts.index("norms") + 2]
    probe = build_probe()
    return probe.get(".".join(parts), "")


_PROBE: dict[str, str] = {}


def build_probe() -> dict[str, str]:
    """Map our vanilla tiny keys to torchvision names (through to_torchvision_state_dict's order)."""
    if not _PROBE:
        model = build_model("tiny", 12)
        _PROBE.update(zip(model.state_dict(), to_torchvision_state_dict(model)))
    return _PROBE


def test_torchvision_export_refuses_ffn_models():
    with pytest.raises(ValueError, match="vanilla"):
        to_torchvision_state_dict(build_model("tiny", 12, trained_frames=(4, 8)))


def build_from_flags(*flags: str) -> torch.nn.Module:
    """The network train.py builds for `--mode ffn --frames 4 8 16` plus flags."""
    args = train.resolve_args(["--mode", "ffn", "--frames", "4", "8", "16", "--shards", "unused", "--output",
                               "unused", "--arch", "tiny", "--pretrained", "none", *flags])
    return train.build_network(args, num_classes=12, channels_last=False)


def test_shared_norms_flag_leaves_one_bn_set_per_layer():
    private = build_from_flags()
    shared = build_from_flags("--no-private-norms")
    norms = [module for module in private.modules() if isinstance(module, BranchNorm)]
    assert norms and all(list(norm.norms) == ["4", "8", "16"] for norm in norms)
    assert not any(isinstance(module, BranchNorm) for module in shared.modules())
    plain = [module for module in shared.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert len(plain) == len(norms)


def test_no_weight_alteration_flag_leaves_no_per_rate_conv_scale():
    with_wa = build_from_flags()
    without = build_from_flags("--no-weight-alteration")
    blocks = [block for block in with_wa.modules() if isinstance(block, TemporalBlock)]
    assert blocks and all(isinstance(block.wa, WeightAlteration) for block in blocks)
    assert not any(isinstance(block.wa, WeightAlteration) for block in without.modules()
                   if isinstance(block, TemporalBlock))
    assert not any(".wa." in key for key in without.state_dict())
    videos = torch.randn(2, 4, 3, 32, 32)
    without.eval()
    assert without(videos).shape == (2, 12)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_lambda_zero_gives_kl_terms_zero_gradient(lam):
    torch.manual_seed(0)
    logits = {frames: torch.randn(6, 12, requires_grad=True) for frames in (4, 8, 16)}
    labels = torch.randint(0, 12, (6,))
    loss, parts = distillation_loss(logits, labels, lam=lam)
    loss.backward()
    assert float(parts["kl_4"]) > 0 and float(parts["kl_8"]) > 0
    for frames in (4, 8):
        assert (logits[frames].grad.abs().max() == 0) == (lam == 0.0)
    assert logits[16].grad.abs().max() > 0
    args = train.resolve_args(["--mode", "ffn", "--frames", "4", "8", "16", "--shards", "x", "--output", "y",
                               "--lam", str(lam)])
    assert args.lam == lam
