"""The one place that chooses the compute device: CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch


def get_device(preferred: str | None = None) -> torch.device:
    """Return the training device.

    Parameters
    ----------
    preferred : str, optional
        An explicit device string ("cuda", "cuda:1", "mps", "cpu"). When None or "auto", the first available of
        CUDA, MPS and CPU is chosen.

    Returns
    -------
    torch.device
        The chosen device.

    Raises
    ------
    ValueError
        One line naming the device, when the name is not a device or this torch build cannot run on it.
    """
    if preferred not in (None, "", "auto"):
        try:
            device = torch.device(preferred)
        except RuntimeError as error:
            raise ValueError(f"--device {preferred}: {error}") from error
        reason = unavailable_reason(device)
        if reason is not None:
            raise ValueError(f"--device {preferred}: not available ({reason}); omit --device (CUDA, then MPS, then CPU)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps_backend = getattr(torch.backends, "mps", None)
    if mps_backend is not None and mps_backend.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def unavailable_reason(device: torch.device) -> str | None:
    """Why this torch build cannot run on `device` (CUDA and MPS are checked), or None when it can."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        return f"only {torch.cuda.device_count()} CUDA device(s)"
    mps_backend = getattr(torch.backends, "mps", None)
    if device.type == "mps" and (mps_backend is None or not mps_backend.is_available()):
        return "torch.backends.mps.is_available() is False"
    return None
