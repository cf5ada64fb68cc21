"""build_model: the one constructor for vanilla TSM and TSM-FFN (config stored on the module for checkpoints)."""

from __future__ import annotations

from typing import Any

import torch

from model.pretrained import load_imagenet_weights
from model.temporal_shift import DEFAULT_FOLD_DIV, SHIFT_IMPLEMENTATIONS
from model.tsm_resnet import ARCH_SPECS, SHIFT_MODES, WA_INITS, TSMResNet

DEFAULT_NUM_CLASSES = 174
DEFAULT_DROPOUT = 0.5


def _normalise_frames(ffn_frames: Any) -> tuple[int, ...] | None:
    """Validate and sort the FFN frame counts (None, or at least one distinct positive int)."""
    if ffn_frames is None:
        return None
    if isinstance(ffn_frames, int):
        ffn_frames = (ffn_frames,)
    frames = tuple(sorted({int(count) for count in ffn_frames}))
    if not frames or frames[0] < 1:
        raise ValueError(f"ffn_frames must be positive frame counts such as (4, 8, 16), got {ffn_frames!r}")
    return frames


def _resolve_fold_div(fold_div: int, shift_fraction: float | None) -> int:
    """fold_div from either argument (shift_fraction = share of channels shifted in each direction, e.g. 1/8)."""
    if shift_fraction is not None:
        if not 0.0 < shift_fraction <= 0.5:
            raise ValueError(f"shift_fraction must be in (0, 0.5], got {shift_fraction}")
        return int(round(1.0 / shift_fraction))
    return int(fold_div)


def _check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def build_model(
    arch: str = "resnet50",
    num_classes: int = DEFAULT_NUM_CLASSES,
    ffn_frames: tuple[int, ...] | list[int] | None = None,
    pretrained: str | None = None,
    *,
    shift_mode: str = "per-video",
    fold_div: int = DEFAULT_FOLD_DIV,
    shift_fraction: float | None = None,
    dropout: float = DEFAULT_DROPOUT,
    channels_last: bool = False,
    private_bn: bool = True,
    weight_alteration: bool = True,
    wa_init: str = "as-run",
    shift_impl: str = "autograd",
) -> TSMResNet:
    """Build a TSM-ResNet (``ffn_frames=None``) or a TSM-FFN (``ffn_frames=(4, 8, 16)``).

    Parameters
    ----------
    arch : str
        "resnet18", "resnet34", "resnet50", "resnet101" or "tiny" (the CPU demo network).
    num_classes : int
        Classifier outputs (174 for SSv2).
    ffn_frames : sequence of int, optional
        Trained frame counts of TSM-FFN; None builds vanilla TSM.
    pretrained : str, optional
        None (random init), "imagenet" (torchvision V1 weights, downloaded or from the torch hub cache) or a path
        to a torchvision-style ResNet state dict file.
    shift_mode : str
        "per-video" (default; the shift never crosses videos) or "official" (reproduces the official FFN training,
        where ``forward_rates`` groups each branch's batch in clips of the highest frame count).
    fold_div : int
        1/fold_div of the channels shifted in each direction (8).
    shift_fraction : float, optional
        Alternative to fold_div: the share shifted in each direction (1/8).
    dropout : float
        Dropout before the classifier (0.5).
    channels_last : bool
        Weights and the (N*T, 3, H, W) view in channels_last memory format (faster with CUDA + AMP).
    private_bn : bool
        FFN: private BatchNorm per frame count (False: one shared set, an ablation).
    weight_alteration : bool
        FFN: Weight Alteration convs (False: none, an ablation).
    wa_init : str
        "as-run" (kaiming fan_out, as the official code ran) or "paper" (N(0, 1e-3)).
    shift_impl : str
        "autograd" (the fast shift), "naive" (slice-assignment baseline, for benchmarks) or "none" (no shift: a
        plain 2D ResNet, used to pretrain a backbone on single images).

    Returns
    -------
    TSMResNet
        The model, with ``config`` (a JSON-serialisable dict: ``build_model(**model.config)`` rebuilds it),
        ``trained_frames``, ``branch_for(T)``, ``forward_rates`` and ``backbone_load`` (what ``pretrained``
        loaded, dropped and left at init: a ``model.pretrained.BackboneLoad``, or None).
    """
    if arch not in ARCH_SPECS:
        raise ValueError(f"arch={arch!r} is not one of {sorted(ARCH_SPECS)}")
    _check_choice("shift_mode", shift_mode, SHIFT_MODES)
    _check_choice("wa_init", wa_init, WA_INITS)
    _check_choice("shift_impl", shift_impl, list(SHIFT_IMPLEMENTATIONS))
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    frames = _normalise_frames(ffn_frames)
    resolved_fold_div = _resolve_fold_div(fold_div, shift_fraction)
    model = TSMResNet(
        arch=arch, num_classes=int(num_classes), ffn_frames=frames, shift_mode=shift_mode,
        fold_div=resolved_fold_div, dropout=float(dropout), channels_last=bool(channels_last),
        private_bn=bool(private_bn), weight_alteration=bool(weight_alteration), wa_init=wa_init,
        shift_impl=shift_impl,
    )
    backbone_load = load_imagenet_weights(model, arch, pretrained) if pretrained is not None else None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.config = {
        "arch": arch, "num_classes": int(num_classes), "ffn_frames": list(frames) if frames else None,
        "pretrained": None, "shift_mode": shift_mode, "fold_div": resolved_fold_div, "dropout": float(dropout),
        "channels_last": bool(channels_last), "private_bn": bool(private_bn),
        "weight_alteration": bool(weight_alteration), "wa_init": wa_init, "shift_impl": shift_impl,
    }
    model.backbone_load = backbone_load
    return model
