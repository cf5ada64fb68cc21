"""Numeric precision (fp32, bf16 or fp16 autocast) and the memory format of the network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHANNELS_LAST_CHOICES = ("auto", "on", "off")


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return the precision actually used: auto means bf16 on CUDA and fp32 elsewhere.

    Raises
    ------
    SystemExit
        If fp16 or bf16 is asked for off CUDA.
    """
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision in ("fp16", "bf16") and device.type != "cuda":
        raise SystemExit(f"--precision {precision} needs CUDA (device is {device}); use --precision fp32")
    return precision


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Return the autocast context for the precision ("fp32": a no-op; "bf16" / "fp16": torch.autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_channels_last(choice: str, device: torch.device) -> bool:
    """Return whether to use the channels_last memory format ("auto": on CUDA only)."""
    return device.type == "cuda" if choice == "auto" else choice == "on"


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """Turn TF32 off for CUDA matmuls and convolutions (true fp32), restoring the previous flags afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
