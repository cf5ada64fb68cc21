"""FFN's parts for any backbone: private normalisation sets and Weight Alteration, fitted onto a plain network.

A family is written as a plain (vanilla) network: ordinary BatchNorm / LayerNorm layers, and a
`WeightAlterationSlot` wherever the family applies Weight Alteration (an identity until converted).
`convert_to_ffn` then turns it into a Frame Flexible Network, in the manner of
``nn.SyncBatchNorm.convert_sync_batchnorm``: every normalisation layer becomes a `BranchNorm` holding one copy
per trained frame count, and every slot becomes a `WeightAlteration` holding one depthwise 1x1 convolution per
trained frame count. Convolutions, attention and the classifier stay shared.

Which copy runs is chosen by `branch_scope`: ``with branch_scope(8): model_body(x)`` runs every converted layer
with its 8-frame copy. The choice lives in a context variable for the duration of the call only; no module
changes state between calls. `model.interface.VideoModel` opens the scope around each forward, so family code
calls its norms as usual.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

# Normalisation layers that get a private copy per trained frame count.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
CONV_BY_DIMS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

_ACTIVE_BRANCH: contextvars.ContextVar[str | None] = contextvars.ContextVar("ffn_active_branch", default=None)


def branch_key(frames: int) -> str:
    """The module-dict key of the branch trained at `frames` frames ("4", "8", "16")."""
    return str(int(frames))


@contextlib.contextmanager
def branch_scope(frames: int | None) -> Iterator[None]:
    """Run converted layers with the copies of the branch trained at `frames` (None: no branch, a plain model).

    Scopes nest; the previous branch is restored on exit, also when the body raises.
    """
    token = _ACTIVE_BRANCH.set(None if frames is None else branch_key(frames))
    try:
        yield
    finally:
        _ACTIVE_BRANCH.reset(token)


def active_branch(owner: str) -> str:
    """The key of the branch in scope; `owner` names the layer for the error raised outside any scope."""
    key = _ACTIVE_BRANCH.get()
    if key is None:
        raise RuntimeError(f"{owner} holds one copy per trained frame count and was called outside "
                           "model.ffn_parts.branch_scope; call the model (VideoModel.forward), not its layers")
    return key


class BranchNorm(nn.Module):
    """One copy of a normalisation layer per trained frame count (FFN's private normalisation sets).

    Parameters
    ----------
    norm : nn.Module
        The layer to copy (a BatchNorm, LayerNorm or GroupNorm); each copy starts with its parameters and
        running statistics.
    keys : sequence of str
        Branch keys (`branch_key` of each trained frame count).
    """

    def __init__(self, norm: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({key: copy.deepcopy(norm) for key in keys})

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Normalise with the copy of the branch in scope."""
        return self.norms[active_branch("BranchNorm")](features)


class WeightAlterationSlot(nn.Module):
    """Where a family applies Weight Alteration: the identity in a plain network, filled by `convert_to_ffn`.

    Parameters
    ----------
    channels : int
        Channels of the features it alters (dimension 1 of the tensor).
    dims : int
        Spatial / temporal dimensions after the channel one (1, 2 or 3): the convolution type it becomes.
    """

    def __init__(self, channels: int, dims: int) -> None:
        super().__init__()
        if dims not in CONV_BY_DIMS:
            raise ValueError(f"WeightAlterationSlot: dims must be one of {sorted(CONV_BY_DIMS)}, got {dims}")
        self.channels = int(channels)
        self.dims = int(dims)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The features unchanged."""
        return features

    def channel_scale(self) -> torch.Tensor | None:
        """None: nothing to fold into a following convolution."""
        return None


class WeightAlteration(nn.Module):
    """FFN's Weight Alteration: per trained frame count, a depthwise 1x1 convolution applied as a residual.

    ``x + wa(x)`` with ``wa`` a depthwise convolution without bias (weight (C, 1, 1...), one per branch). Since
    ``wa`` scales each channel, ``x + wa(x)`` equals ``x * (1 + w)`` per channel: `channel_scale` gives those
    factors, so a family may fold them into the weights of the convolution that follows instead.

    Parameters
    ----------
    channels, dims : int
        As `WeightAlterationSlot`.
    keys : sequence of str
        Branch keys.
    """

    def __init__(self, channels: int, dims: int, keys: Sequence[str]) -> None:
        super().__init__()
        conv = CONV_BY_DIMS[dims]
        self.channels, self.dims = int(channels), int(dims)
        self.convs = nn.ModuleDict(
            {key: conv(channels, channels, kernel_size=1, groups=channels, bias=False) for key in keys}
        )

    def active_conv(self) -> nn.Module:
        """The convolution of the branch in scope."""
        return self.convs[active_branch("WeightAlteration")]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``x + wa(x)`` with the branch in scope."""
        return features + self.active_conv()(features)

    def channel_scale(self) -> torch.Tensor:
        """(C,) factors ``1 + w`` of the branch in scope: ``x + wa(x) == x * (1 + w)`` per channel."""
        return 1.0 + self.active_conv().weight.view(-1)


def convert_to_ffn(
    module: nn.Module, trained_frames: Sequence[int], private_norms: bool = True, weight_alteration: bool = True
) -> nn.Module:
    """Turn a plain network into an FFN in place: private norms per frame count, Weight Alteration in its slots.

    Parameters
    ----------
    module : nn.Module
        The network (its norm layers and WeightAlterationSlot children are replaced where they stand, so the
        order of modules, and of any initialisation that walks them, is kept).
    trained_frames : sequence of int
        The frame counts of the branches, e.g. (4, 8, 16).
    private_norms : bool
        Give every BatchNorm / LayerNorm / GroupNorm a copy per branch (False: shared norms, an ablation).
    weight_alteration : bool
        Fill every slot with a per-branch Weight Alteration (False: slots stay the identity, an ablation).

    Returns
    -------
    nn.Module
        The converted module (a new object only when `module` itself is a norm layer or a slot).
    """
    keys = tuple(branch_key(frames) for frames in sorted(set(int(frames) for frames in trained_frames)))
    if not keys:
        raise ValueError("convert_to_ffn needs at least one trained frame count")
    converted = _converted(module, keys, private_norms, weight_alteration)
    if converted is not None:
        return converted
    for name, child in list(module.named_children()):
        replacement = _converted(child, keys, private_norms, weight_alteration)
        if replacement is not None:
            setattr(module, name, replacement)
        elif not isinstance(child, (BranchNorm, WeightAlteration)):
            convert_to_ffn(child, trained_frames, private_norms, weight_alteration)
    return module


def _converted(module: nn.Module, keys: tuple[str, ...], private_norms: bool,
               weight_alteration: bool) -> nn.Module | None:
    """The FFN replacement of one module, or None when it is not a norm layer or a slot (or that part is off)."""
    if private_norms and isinstance(module, NORM_TYPES):
        return BranchNorm(module, keys)
    if weight_alteration and isinstance(module, WeightAlterationSlot):
        return WeightAlteration(module.channels, module.dims, keys)
    return None


def weight_alteration_modules(module: nn.Module) -> list[WeightAlteration]:
    """Every Weight Alteration of a network, in module order."""
    return [child for child in module.modules() if isinstance(child, WeightAlteration)]
