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
    """
    if preferred not in (None, "", "auto"):
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps_backend = getattr(torch.backends, "mps", None)
    if mps_backend is not None and mps_backend.is_available():
        return torch.device("mps")
    return torch.device("cpu")
