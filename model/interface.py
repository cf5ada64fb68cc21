"""The interface every model family implements: `VideoModel` (an abstract nn.Module) and its `InputSpec`.

A model takes videos ``(N, T, 3, H, W)``, float, already normalised in its family's own convention (declared in
`input_spec`, applied by the loader and by predict.py), and returns logits ``(N, classes)``, never
probabilities. It runs at any frame count T its input spec accepts. An FFN (``trained_frames`` set) runs each T
through the branch of the nearest trained frame count, ties going to the larger (`branch_for`); a vanilla model
(``trained_frames`` None) has one set of weights for every T. Training calls ``forward({T: videos, ...})``, which
runs `forward_by_frames`: every T through its own branch (DistributedDataParallel wraps ``forward`` only, so the
dict form is how the multi-frame-count step goes through it).

A family implements `forward_branch` (and `classifier`, and usually `load_pretrained` and the official key rules);
the base class checks the input, picks the branch and opens its `model.ffn_parts.branch_scope`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from common.imagenet import IMAGENET_MEAN, IMAGENET_STD
from model.ffn_parts import branch_scope
from model.official_checkpoints import KeyRules

CHANNEL_ORDERS = ("RGB", "BGR")
VIDEO_DIMS = 5


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model expects of its input frames.

    Attributes
    ----------
    mean, std : tuple of float
        Per-channel mean and standard deviation on the 0-1 pixel scale, in the model's channel order
        (frames are ``(pixel / 255 - mean) / std``).
    channel_order : str
        "RGB" or "BGR" (the order of the 3 channels the model reads).
    frames_multiple : int
        Valid frame counts are multiples of this (SlowFast: its alpha; 1 elsewhere).
    min_frames : int
        The smallest valid frame count.
    min_size : int
        The smallest frame height and width in pixels.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    frames_multiple: int = 1
    min_frames: int = 1
    min_size: int = 1

    def __post_init__(self) -> None:
        """Check the fields."""
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order={self.channel_order!r}; use one of {CHANNEL_ORDERS}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean {self.mean} and std {self.std} need three values each, std positive")
        if self.frames_multiple < 1 or self.min_frames < 1 or self.min_size < 1:
            raise ValueError("frames_multiple, min_frames and min_size must be positive")

    def accepts_frames(self, frames: int) -> bool:
        """True when the model runs at `frames` frames."""
        return frames >= self.min_frames and frames % self.frames_multiple == 0

    def nearest_valid_frames(self, frames: int) -> list[int]:
        """The valid frame counts nearest to `frames` (one or two: below and above)."""
        step = self.frames_multiple
        first = max(self.min_frames, step * -(-self.min_frames // step))
        below = [count for count in (step * (frames // step),) if count >= first]
        above = step * -(-frames // step)
        return sorted(set(below + [max(above, first)]))

    def check_frames(self, frames: int) -> None:
        """Raise ValueError (one line naming the nearest valid counts) when `frames` is not valid."""
        if not self.accepts_frames(frames):
            nearest = " or ".join(str(count) for count in self.nearest_valid_frames(frames))
            raise ValueError(f"this model does not run at {frames} frames (it needs a multiple of "
                             f"{self.frames_multiple}, at least {self.min_frames}); use {nearest}")

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError (one line) when frames of height x width are smaller than `min_size`."""
        if min(height, width) < self.min_size:
            raise ValueError(f"frames of {height}x{width} px are smaller than this model's minimum "
                             f"{self.min_size} px; use a larger --crop-size")

    def as_record(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        return {field.name: (list(value) if isinstance(value := getattr(self, field.name), tuple) else value)
                for field in dataclasses.fields(self)}


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise ValueError (one line) naming the choices when a model option's `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def nearest_branch(trained_frames: Sequence[int], frames: int) -> int:
    """The trained frame count nearest to `frames`, ties to the larger (FFN's official branch rule).

    With (4, 8, 16): 1-5 -> 4, 6-11 -> 8, 12 and more -> 16.
    """
    if frames < 1:
        raise ValueError(f"frame count must be positive, got {frames}")
    return min(trained_frames, key=lambda trained: (abs(trained - frames), -trained))


def check_videos(videos: torch.Tensor) -> None:
    """Raise ValueError unless `videos` is shaped (N, T, 3, H, W)."""
    if videos.dim() != VIDEO_DIMS or videos.shape[2] != 3:
        raise ValueError(f"model input must be (N, T, 3, H, W), got shape {tuple(videos.shape)}")


class VideoModel(nn.Module):
    """Base class of every model family (see the module docstring for the contract).

    Subclasses set ``trained_frames`` (sorted tuple, or None for a vanilla model) and ``input_spec`` in their
    constructor and implement `forward_branch` and `classifier`. `model.registry.build_model` sets ``config``
    (``build_model(**model.config)`` rebuilds the model) and ``backbone_load`` (what pretrained weights loaded).
    """

    trained_frames: tuple[int, ...] | None = None
    input_spec: InputSpec = InputSpec()
    # Official checkpoint key -> our key, as (pattern, replacement) pairs tried in order after the "module." and
    # family prefixes are removed (model.official_checkpoints applies them).
    OFFICIAL_KEY_RULES: KeyRules = ()
    OFFICIAL_KEY_PREFIX: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        self.backbone_load: Any = None

    @property
    def classifier(self) -> nn.Linear:
        """The final linear layer (optimizer policies give it its own learning rate)."""
        raise NotImplementedError(f"{type(self).__name__} does not name its classifier")

    def branch_for(self, frames: int) -> int | None:
        """The trained frame count whose branch runs at `frames` frames (None for a vanilla model)."""
        if self.trained_frames is None:
            if frames < 1:
                raise ValueError(f"frame count must be positive, got {frames}")
            return None
        return nearest_branch(self.trained_frames, frames)

    def forward_branch(self, videos: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Logits (N, classes) of videos (N, T, 3, H, W) with the branch in scope.

        `clip_frames` is how many consecutive frames of the batch form one clip for the family's temporal
        operations: T, except in a family's mode that reproduces an official training bug.
        """
        raise NotImplementedError

    def training_clip_frames(self, frames: int, highest: int) -> int:
        """Frames per clip for the temporal operations of the `frames` branch in a multi-frame-count step."""
        return frames

    def forward(self, videos: torch.Tensor | dict[int, torch.Tensor]) -> torch.Tensor | dict[int, torch.Tensor]:
        """Logits of videos (N, T, 3, H, W) through `branch_for(T)`; a dict {T: videos} goes to forward_by_frames."""
        if isinstance(videos, dict):
            return self.forward_by_frames(videos)
        check_videos(videos)
        frames = int(videos.shape[1])
        self.input_spec.check_frames(frames)
        with branch_scope(self.branch_for(frames)):
            return self.forward_branch(videos, frames)

    def forward_by_frames(self, videos_by_frames: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Logits for each frame count of a multi-frame-count batch, each through its own branch.

        Parameters
        ----------
        videos_by_frames : dict
            {T: videos (N, T, 3, H, W)}. For an FFN every T must be a trained frame count.

        Returns
        -------
        dict
            {T: logits (N, classes)}.
        """
        if not videos_by_frames:
            raise ValueError("forward_by_frames needs at least one {frames: videos} entry")
        highest = max(videos_by_frames)
        logits_by_frames = {}
        for frames in sorted(videos_by_frames):
            videos = videos_by_frames[frames]
            check_videos(videos)
            if videos.shape[1] != frames:
                raise ValueError(f"forward_by_frames: the videos under key {frames} have shape "
                                 f"{tuple(videos.shape)}, expected (N, {frames}, 3, H, W)")
            if self.trained_frames is not None and frames not in self.trained_frames:
                raise ValueError(f"forward_by_frames: {frames} frames is not a trained frame count "
                                 f"{self.trained_frames}; use model(videos) for other frame counts")
            self.input_spec.check_frames(frames)
            branch = frames if self.trained_frames is not None else None
            with branch_scope(branch):
                logits_by_frames[frames] = self.forward_branch(videos, self.training_clip_frames(frames, highest))
        return logits_by_frames

    def load_pretrained(self, source: str) -> Any:
        """Initialise the backbone from pretrained weights (`source`: a path, or a family's named source).

        Returns what was loaded, dropped and left at init (a model.pretrained.BackboneLoad).
        """
        raise ValueError(f"{type(self).__name__}: no pretrained weights can be loaded for this family")
