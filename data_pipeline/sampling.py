"""Temporal sampling: which frame indices each requested frame count reads, chosen before any decode.

The official TSN/TSM/FFN rules (0-based indices here, the official frame files are 1-based):

- train, ``avg = n // T``: when ``avg > 0`` index ``i = i * avg + randint(avg)``; otherwise (``n < T``) every index
  is 0, the first frame repeated T times (the official third branch can never run for RGB input);
- test: when ``n > T`` the centre of each segment, ``int(tick / 2 + tick * i)`` with ``tick = n / T``; otherwise
  (``n <= T``, including ``n == T``) every index is 0.

``short_video="spread"`` replaces both "every index is 0" branches by indices spread evenly over the video
(``floor((i + u) * n / T)`` with one ``u`` per clip, uniform in [0, 1) in training, 0.5 in test): every frame is
repeated ``floor(T / n)`` or ``ceil(T / n)`` times, in order.

``short_video="segments"`` is TSM's test script (test_models.py reads ``_get_test_indices``, which has no
short-video branch): at test time every video, short or not, takes ``int(tick * f + tick * i)`` (f = 0.5, and 0.0
for the second clip of ``twice_sample``), with the official float arithmetic. Training refuses it (ValueError).

FFN trains on several frame counts at once. ``sampling="independent"`` (the official behaviour of the 2D
networks, TSM and TEA) samples every frame count on its own; ``sampling="nested"`` samples only the largest count
and takes the smaller ones out of it (position ``floor((j + u) * T_max / T)`` of the largest set), so a video
decodes at most ``T_max`` frames.

``sampling="rounded"`` is the rule of the official FFN loaders of the 3D and Transformer networks (FFN-pytorch,
``slowfast/datasets/sth_ffn.py``): with ``s = (n - 1) / T``, training takes frame
``randint(round(i s), round((i + 1) s))`` for segment i, both ends included (numpy rounding: halves to even),
drawn for the highest frame count first and then for the others in ascending order (64, 16, 32; or 16, 4, 8);
test takes ``round(i s) + int(s / (C + 1) * (c + 1))`` for clip c of C (one clip: ``round(i s) + int(s / 2)``).
Every index is in [0, n - 1] for any n >= 1, so the short-video rule does not apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHORT_VIDEO_RULES = ("official", "spread", "segments")
SAMPLING_MODES = ("independent", "nested", "rounded")
EVAL_CLIP_CENTRE = 0.5


def check_short_video(short_video: str, train: bool = False) -> None:
    """Raise ValueError for an unknown short-video rule, or for the test-only "segments" in training."""
    if short_video not in SHORT_VIDEO_RULES:
        raise ValueError(f"short_video={short_video!r}; use one of {SHORT_VIDEO_RULES}")
    if train and short_video == "segments":
        raise ValueError("short_video=segments is a test-only rule; use official or spread")


def check_sampling(sampling: str) -> None:
    """Raise ValueError for an unknown multi-frame-count sampling mode."""
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling={sampling!r}; use one of {SAMPLING_MODES}")


def _spread(num_frames: int, frames: int, fractions: np.ndarray) -> np.ndarray:
    """Return ``floor((i + fraction_i) * n / T)``: indices spread evenly over a short video."""
    positions = (np.arange(frames) + fractions) * num_frames / frames
    return np.minimum(np.floor(positions).astype(np.int64), num_frames - 1)


def train_indices(
    num_frames: int, frames: int, rng: np.random.Generator, short_video: str = "official"
) -> np.ndarray:
    """Sample ``frames`` training indices: a random frame in each of T equal segments (TSN).

    Parameters
    ----------
    num_frames : int
        Frames in the video (at least 1).
    frames : int
        Frames to sample (T).
    rng : numpy.random.Generator
        Source of randomness.
    short_video : str
        "official" (every index 0 when ``num_frames < T``) or "spread" ("segments" is test-only: ValueError).

    Returns
    -------
    numpy.ndarray
        int64 indices, shape (T,), non-decreasing, each in [0, num_frames).
    """
    check_short_video(short_video, train=True)
    segment_length = num_frames // frames
    if segment_length > 0:
        starts = np.arange(frames, dtype=np.int64) * segment_length
        return starts + rng.integers(0, segment_length, size=frames)
    if short_video == "spread":
        return _spread(num_frames, frames, np.full(frames, rng.random()))
    return np.zeros(frames, dtype=np.int64)


def eval_indices(
    num_frames: int, frames: int, short_video: str = "official", clip_fraction: float = EVAL_CLIP_CENTRE
) -> np.ndarray:
    """Return the test indices: segment centres (``clip_fraction=0.5``) or another fixed point of each segment.

    Parameters
    ----------
    num_frames : int
        Frames in the video (at least 1).
    frames : int
        Frames to sample (T).
    short_video : str
        "official" (every index 0 when ``num_frames <= T``, FFN's and TSM's validation), "spread", or "segments"
        (the segment formula for every video, TSM's test script).
    clip_fraction : float
        Where in each segment the index falls, in [0, 1); 0.5 is the official single clip, 0.0 the official
        second clip of the two-clip protocol.

    Returns
    -------
    numpy.ndarray
        int64 indices, shape (T,).
    """
    check_short_video(short_video)
    if num_frames > frames or short_video == "segments":
        tick = num_frames / frames  # clip_fraction 0.5 gives the official int(tick / 2.0 + tick * i) exactly
        positions = [int(tick * clip_fraction + tick * index) for index in range(frames)]
        return np.minimum(np.asarray(positions, dtype=np.int64), num_frames - 1)
    if short_video == "spread":
        return _spread(num_frames, frames, np.full(frames, clip_fraction))
    return np.zeros(frames, dtype=np.int64)


def sample_indices(
    num_frames: int,
    frames: int,
    train: bool,
    rng: np.random.Generator | None = None,
    short_video: str = "official",
    clip_fraction: float = EVAL_CLIP_CENTRE,
) -> np.ndarray:
    """Sample the indices of one frame count: `train_indices` when training, `eval_indices` otherwise.

    Raises
    ------
    ValueError
        If the video has no frame, T < 1, or a training call has no rng.
    """
    if num_frames < 1 or frames < 1:
        raise ValueError(f"need num_frames >= 1 and frames >= 1, got {num_frames} and {frames}")
    if train:
        if rng is None:
            raise ValueError("training sampling needs an rng")
        return train_indices(num_frames, frames, rng, short_video)
    return eval_indices(num_frames, frames, short_video, clip_fraction)


def rounded_segment_bounds(num_frames: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The first and last frame of each of T segments of the rounded rule: round(i s), round((i + 1) s), s = (n - 1) / T.

    numpy rounding (halves to even), as the official loaders' ``int(np.round(...))``.
    """
    segment = (num_frames - 1) / frames
    positions = np.arange(frames + 1, dtype=np.int64) * segment
    bounds = np.round(positions).astype(np.int64)
    return bounds[:-1], bounds[1:]


def rounded_train_indices(num_frames: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """The rounded rule's training indices: one frame drawn in each segment, both ends included."""
    starts, ends = rounded_segment_bounds(num_frames, frames)
    return rng.integers(starts, ends + 1).astype(np.int64)


def rounded_eval_indices(num_frames: int, frames: int, clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """The rounded rule's test indices of clip `clip` of `num_clips`: ``round(i s) + int(s / (C + 1) * (c + 1))``."""
    starts, _ = rounded_segment_bounds(num_frames, frames)
    offset = int((num_frames - 1) / frames / (num_clips + 1) * (clip + 1))
    return np.minimum(starts + offset, num_frames - 1)


def rounded_training_order(requested_frames: Sequence[int]) -> list[int]:
    """The order the rounded rule draws frame counts in: the highest first, then the others ascending."""
    counts = sorted({int(frames) for frames in requested_frames})
    return [counts[-1], *counts[:-1]]


def rounded_indices_by_frames(num_frames: int, requested_frames: Sequence[int], train: bool,
                              rng: np.random.Generator | None = None, clip: int = 0,
                              num_clips: int = 1) -> dict[int, np.ndarray]:
    """Every requested frame count's indices under the rounded rule (see the module docstring)."""
    if num_frames < 1:
        raise ValueError(f"need num_frames >= 1, got {num_frames}")
    if train:
        if rng is None:
            raise ValueError("training sampling needs an rng")
        drawn = {frames: rounded_train_indices(num_frames, frames, rng)
                 for frames in rounded_training_order(requested_frames)}
    else:
        drawn = {frames: rounded_eval_indices(num_frames, frames, clip, num_clips) for frames in requested_frames}
    return {int(frames): drawn[int(frames)] for frames in requested_frames}


def nested_positions(
    largest: int, frames: int, train: bool, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Return the positions inside the largest frame count's index set that a smaller one takes in `nested` mode.

    The largest set is cut into ``frames`` equal groups; training takes a random member of each group,
    test the middle one (``floor((j + 0.5) * largest / T)``).
    """
    if train:
        if rng is None:
            raise ValueError("training sampling needs an rng")
        fractions = rng.random(frames)
    else:
        fractions = np.full(frames, EVAL_CLIP_CENTRE)
    return _spread(largest, frames, fractions)


def indices_by_frames(
    num_frames: int,
    requested_frames: Sequence[int],
    train: bool,
    rng: np.random.Generator | None = None,
    sampling: str = "independent",
    short_video: str = "official",
    clip_fraction: float = EVAL_CLIP_CENTRE,
) -> dict[int, np.ndarray]:
    """Sample the frame indices of every requested frame count of one video (one clip).

    Parameters
    ----------
    num_frames : int
        Frames in the video.
    requested_frames : sequence of int
        Frame counts, e.g. (4, 8, 16).
    train : bool
        Training (random) or test (deterministic) sampling.
    rng : numpy.random.Generator, optional
        Needed when training.
    sampling : str
        "independent" (every frame count on its own), "nested" (smaller counts taken out of the largest) or
        "rounded" (the 3D / Transformer loaders' rule; one clip at the segment middles in test).
    short_video : str
        "official" or "spread".
    clip_fraction : float
        Test only: where in each segment the indices fall (see `eval_indices`).

    Returns
    -------
    dict
        {T: int64 indices of shape (T,)} for every T of `requested_frames`.
    """
    check_sampling(sampling)
    if not requested_frames:
        raise ValueError("requested_frames is empty; pass at least one frame count, e.g. (16,)")
    requested = [int(frames) for frames in requested_frames]
    if sampling == "rounded":
        return rounded_indices_by_frames(num_frames, requested, train, rng)
    if sampling == "independent" or len(requested) == 1:
        return {frames: sample_indices(num_frames, frames, train, rng, short_video, clip_fraction)
                for frames in requested}
    largest = max(requested)
    base = sample_indices(num_frames, largest, train, rng, short_video, clip_fraction)
    return {frames: base if frames == largest else base[nested_positions(largest, frames, train, rng)]
            for frames in requested}


def eval_clip_fractions(num_clips: int) -> list[float]:
    """Return where each test clip falls in its segments: 0.5 first, then evenly around it (2 clips: 0.5, 0.0)."""
    if num_clips < 1:
        raise ValueError(f"test_clips must be at least 1, got {num_clips}")
    return [(EVAL_CLIP_CENTRE + clip / num_clips) % 1.0 for clip in range(num_clips)]


@dataclass
class FramePlan:
    """The frames one video needs: the unique indices to decode and, per view and frame count, positions into them.

    Attributes
    ----------
    unique : numpy.ndarray
        Sorted unique frame indices to decode (each decoded once per video).
    positions : list of dict
        One dict per temporal clip: {T: int64 positions into `unique`, shape (T,)}.
    """

    unique: np.ndarray
    positions: list[dict[int, np.ndarray]]


def clip_gathers(clip: dict[int, np.ndarray]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Return the sorted positions one clip of a FramePlan needs and, per frame count, where its frames sit among
    them."""
    needed = np.unique(np.concatenate(list(clip.values())))
    return needed, {frames: np.searchsorted(needed, positions) for frames, positions in clip.items()}


def plan_frames(
    num_frames: int,
    requested_frames: Sequence[int],
    train: bool,
    rng: np.random.Generator | None = None,
    sampling: str = "independent",
    short_video: str = "official",
    num_clips: int = 1,
) -> FramePlan:
    """Sample every clip and frame count of one video and return the frames to decode with their positions.

    Training always uses one clip. Test clips follow `eval_clip_fractions` (the rounded rule: its own clip
    offsets).
    """
    if sampling == "rounded":
        check_sampling(sampling)
        clip_count = 1 if train else num_clips
        clips = [rounded_indices_by_frames(num_frames, requested_frames, train, rng, clip, clip_count)
                 for clip in range(clip_count)]
    else:
        fractions = [EVAL_CLIP_CENTRE] if train else eval_clip_fractions(num_clips)
        clips = [
            indices_by_frames(num_frames, requested_frames, train, rng, sampling, short_video, fraction)
            for fraction in fractions
        ]
    unique = np.unique(np.concatenate([indices for clip in clips for indices in clip.values()]))
    positions = [
        {frames: np.searchsorted(unique, indices).astype(np.int64) for frames, indices in clip.items()}
        for clip in clips
    ]
    return FramePlan(unique=unique, positions=positions)
