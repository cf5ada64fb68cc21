"""Temporal shift (TSM, "blockres"): a cheap custom autograd Function and the naive reference.

The frames of a batch arrive as one (N*T, C, H, W) tensor, videos one after another, frames in order. Within each
clip of ``clip_frames`` consecutive frames, channels [0, fold) take the value of the next frame (out[t] = x[t + 1]),
channels [fold, 2 * fold) take the value of the previous frame (out[t] = x[t - 1]), the other channels are
unchanged, and the shifted channels are zero where the neighbour lies outside the clip. ``fold = C // fold_div``.

The fast path is a ``torch.autograd.Function``: the forward allocates the output in the input's memory format and
copies the two shifted folds and the untouched channels into it; the backward is the opposite shift of the
gradient. Autograd therefore records one node per shift instead of the slice assignments of the naive version,
and the copies touch every element exactly once (channels_last included: the 5-D view only splits the batch
dimension, which is outermost in both memory formats).
"""

from __future__ import annotations

import torch

DEFAULT_FOLD_DIV = 8


def _check_shift_arguments(frames: torch.Tensor, clip_frames: int, fold_div: int) -> None:
    """Raise a clear error when the shift cannot be applied to ``frames``."""
    if frames.dim() != 4:
        raise ValueError(f"temporal shift expects a 4-D (N*T, C, H, W) tensor, got shape {tuple(frames.shape)}")
    if clip_frames < 1 or frames.shape[0] % clip_frames != 0:
        raise ValueError(
            f"temporal shift: {frames.shape[0]} frames cannot be grouped in clips of {clip_frames}; "
            "pass a batch whose frame count is a multiple of the clip length"
        )
    if fold_div < 2:
        raise ValueError(f"temporal shift: fold_div must be at least 2, got {fold_div}")


def _as_clips(frames: torch.Tensor, clip_frames: int) -> torch.Tensor:
    """View (N*T, C, H, W) as (N, T, C, H, W) without copying (works for contiguous and channels_last)."""
    total, channels, height, width = frames.shape
    return frames.view(total // clip_frames, clip_frames, channels, height, width)


def _shift_into(source: torch.Tensor, clip_frames: int, fold: int, reverse: bool) -> torch.Tensor:
    """Return a new tensor holding the temporal shift of ``source`` (or the opposite shift when ``reverse``).

    Parameters
    ----------
    source : torch.Tensor
        (N*T, C, H, W) frames (or their gradient).
    clip_frames : int
        Frames per clip.
    fold : int
        Channels shifted in each direction.
    reverse : bool
        False: channels [0, fold) read frame t + 1 and [fold, 2 fold) read frame t - 1 (the forward shift).
        True: the directions are swapped (the adjoint, used for the gradient).
    """
    result = torch.empty_like(source)
    if fold == 0 or clip_frames == 1:
        result.copy_(source)
        if fold > 0:
            result[:, : 2 * fold].zero_()
        return result
    src = _as_clips(source, clip_frames)
    dst = _as_clips(result, clip_frames)
    from_next, from_previous = (slice(fold, 2 * fold), slice(0, fold)) if reverse else (
        slice(0, fold),
        slice(fold, 2 * fold),
    )
    dst[:, :-1, from_next].copy_(src[:, 1:, from_next])
    dst[:, -1:, from_next].zero_()
    dst[:, 1:, from_previous].copy_(src[:, :-1, from_previous])
    dst[:, :1, from_previous].zero_()
    dst[:, :, 2 * fold :].copy_(src[:, :, 2 * fold :])
    return result


class TemporalShiftFunction(torch.autograd.Function):
    """Autograd Function for the temporal shift; backward is the opposite shift of the gradient."""

    @staticmethod
    def forward(ctx, frames: torch.Tensor, clip_frames: int, fold: int) -> torch.Tensor:  # type: ignore[override]
        ctx.clip_frames = clip_frames
        ctx.fold = fold
        return _shift_into(frames, clip_frames, fold, reverse=False)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        grad_input = _shift_into(grad_output, ctx.clip_frames, ctx.fold, reverse=True)
        return grad_input, None, None


def temporal_shift(frames: torch.Tensor, clip_frames: int, fold_div: int = DEFAULT_FOLD_DIV) -> torch.Tensor:
    """Shift 1/fold_div of the channels one frame forward and 1/fold_div one frame back, within each clip.

    Parameters
    ----------
    frames : torch.Tensor
        (N*T, C, H, W), videos one after another, frames in order; any memory format.
    clip_frames : int
        Number of consecutive frames that form one clip (T for a correct per-video shift).
    fold_div : int
        1/fold_div of the channels moves in each direction (8 in TSM and FFN).

    Returns
    -------
    torch.Tensor
        A new tensor of the same shape, dtype and memory format.
    """
    _check_shift_arguments(frames, clip_frames, fold_div)
    return TemporalShiftFunction.apply(frames, int(clip_frames), frames.shape[1] // fold_div)


def naive_temporal_shift(frames: torch.Tensor, clip_frames: int, fold_div: int = DEFAULT_FOLD_DIV) -> torch.Tensor:
    """The reference shift as commonly written (zeros_like plus three slice copies), autograd through slices.

    Same contract as :func:`temporal_shift`; kept as the correctness reference and the benchmark baseline.
    """
    _check_shift_arguments(frames, clip_frames, fold_div)
    fold = frames.shape[1] // fold_div
    clips = _as_clips(frames, clip_frames)
    shifted = torch.zeros_like(clips)
    shifted[:, :-1, :fold] = clips[:, 1:, :fold]
    shifted[:, 1:, fold : 2 * fold] = clips[:, :-1, fold : 2 * fold]
    shifted[:, :, 2 * fold :] = clips[:, :, 2 * fold :]
    return shifted.view(frames.shape)


def no_temporal_shift(frames: torch.Tensor, clip_frames: int, fold_div: int = DEFAULT_FOLD_DIV) -> torch.Tensor:
    """No shift at all: the block becomes a plain 2D ResNet block (single-image pretraining of a backbone).

    Same contract as :func:`temporal_shift`; returns ``frames`` itself.
    """
    _check_shift_arguments(frames, clip_frames, fold_div)
    return frames


SHIFT_IMPLEMENTATIONS = {"autograd": temporal_shift, "naive": naive_temporal_shift, "none": no_temporal_shift}
