"""TSM-ResNet and TSM-FFN: one network class whose BatchNorms and Weight Alteration can be private per frame count.

Vanilla TSM is the case with one shared BatchNorm set and no Weight Alteration. TSM-FFN (Frame Flexible Network)
shares every convolution and the classifier and keeps, per trained frame count ("branch"), a private copy of every
BatchNorm (stem, every block, every downsample) and a depthwise 1x1 Weight Alteration conv per block, applied as a
residual after the shift and before conv1. Module names are ours; ``model.official_checkpoints`` maps the official
names onto them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.temporal_shift import SHIFT_IMPLEMENTATIONS

SHARED_BRANCH = "shared"
SHIFT_MODES = ("per-video", "official")
WA_INITS = ("as-run", "paper")
PAPER_WA_STD = 1e-3
HEAD_INIT_STD = 1e-3


@dataclass(frozen=True)
class ArchSpec:
    """Layout of a ResNet backbone.

    Attributes
    ----------
    block : str
        "basic" or "bottleneck".
    layers : tuple of int
        Blocks per stage.
    widths : tuple of int
        Planes per stage (before the bottleneck expansion).
    stem : str
        "imagenet" (7x7 stride-2 conv + 3x3 max pool) or "tiny" (3x3 stride-2 conv, no pool).
    stem_channels : int
        Channels after the stem.
    stage_strides : tuple of int
        Stride of the first block of each stage.
    """

    block: str
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    stem: str
    stem_channels: int
    stage_strides: tuple[int, ...]


ARCH_SPECS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("basic", (2, 2, 2, 2), (64, 128, 256, 512), "imagenet", 64, (1, 2, 2, 2)),
    "resnet34": ArchSpec("basic", (3, 4, 6, 3), (64, 128, 256, 512), "imagenet", 64, (1, 2, 2, 2)),
    "resnet50": ArchSpec("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), "imagenet", 64, (1, 2, 2, 2)),
    "resnet101": ArchSpec("bottleneck", (3, 4, 23, 3), (64, 128, 256, 512), "imagenet", 64, (1, 2, 2, 2)),
    "tiny": ArchSpec("basic", (1, 1, 1, 1), (16, 32, 64, 128), "tiny", 16, (2, 2, 2, 2)),
}
BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}


class BranchNorm(nn.Module):
    """A BatchNorm2d per branch (private BN) or one shared BatchNorm2d (key "shared")."""

    def __init__(self, channels: int, branch_keys: tuple[str, ...]) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({key: nn.BatchNorm2d(channels) for key in branch_keys})

    def forward(self, features: torch.Tensor, branch_key: str) -> torch.Tensor:
        return self.norms[branch_key](features)


class WeightAlteration(nn.Module):
    """Per-branch depthwise 1x1 conv applied as a residual: s + wa(s) (FFN's Weight Alteration).

    Blocks never run it on features: ``channel_scale`` folds s + wa(s) into the following conv1's weights.
    """

    def __init__(self, channels: int, branch_keys: tuple[str, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleDict(
            {key: nn.Conv2d(channels, channels, kernel_size=1, groups=channels, bias=False) for key in branch_keys}
        )

    def channel_scale(self, branch_key: str) -> torch.Tensor:
        """(C,) factors 1 + w: s + wa(s) equals s scaled per channel, since wa is a depthwise 1x1 conv."""
        return 1.0 + self.convs[branch_key].weight.view(-1)


@dataclass(frozen=True)
class Route:
    """Which parameters a forward uses and how the shift groups frames.

    Attributes
    ----------
    norm_key : str
        Key of the BatchNorm set ("shared" or the branch's frame count as text).
    wa_key : str or None
        Key of the Weight Alteration convs, or None when the model has none.
    clip_len : int
        Frames per clip for the temporal shift.
    """

    norm_key: str
    wa_key: str | None
    clip_len: int


class TemporalBlock(nn.Module):
    """A ResNet BasicBlock or Bottleneck with the temporal shift (and optional WA) at the start of its residual branch.

    Parameters
    ----------
    kind : str
        "basic" or "bottleneck".
    in_channels, planes, stride : int
        As in torchvision (the stride sits on the 3x3 conv, ResNet v1.5).
    norm_keys, wa_keys : tuple of str
        BatchNorm set keys and Weight Alteration keys (empty: no WA).
    fold_div : int
        1/fold_div of the channels shifted each way.
    shift_impl : str
        "autograd" (the fast Function) or "naive" (benchmark baseline).
    """

    def __init__(
        self,
        kind: str,
        in_channels: int,
        planes: int,
        stride: int,
        norm_keys: tuple[str, ...],
        wa_keys: tuple[str, ...],
        fold_div: int,
        shift_impl: str,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.fold_div = fold_div
        self.shift = SHIFT_IMPLEMENTATIONS[shift_impl]
        out_channels = planes * BLOCK_EXPANSION[kind]
        self.wa = WeightAlteration(in_channels, wa_keys) if wa_keys else None
        if kind == "bottleneck":
            self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
            self.bn3 = BranchNorm(out_channels, norm_keys)
        else:
            self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = BranchNorm(planes, norm_keys)
        self.bn2 = BranchNorm(planes, norm_keys)
        self.relu = nn.ReLU(inplace=True)
        needs_downsample = stride != 1 or in_channels != out_channels
        self.downsample_conv = None
        self.downsample_bn = None
        if needs_downsample:
            self.downsample_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.downsample_bn = BranchNorm(out_channels, norm_keys)

    def _conv1_after_wa(self, shifted: torch.Tensor, wa_key: str | None) -> torch.Tensor:
        """conv1(s + wa(s)) computed as conv1 with its input channels scaled by (1 + w): the same map, but the
        per-channel scaling touches the small weight instead of the activation (no extra pass over memory)."""
        if self.wa is None or wa_key is None:
            return self.conv1(shifted)
        scale = self.wa.channel_scale(wa_key).to(self.conv1.weight.dtype)
        weight = self.conv1.weight * scale.view(1, -1, 1, 1)
        return nn.functional.conv2d(shifted, weight, None, self.conv1.stride, self.conv1.padding)

    def forward(self, features: torch.Tensor, route: Route) -> torch.Tensor:
        residual = self.shift(features, route.clip_len, self.fold_div)
        residual = self.relu(self.bn1(self._conv1_after_wa(residual, route.wa_key), route.norm_key))
        residual = self.bn2(self.conv2(residual), route.norm_key)
        if self.kind == "bottleneck":
            residual = self.bn3(self.conv3(self.relu(residual)), route.norm_key)
        identity = features
        if self.downsample_conv is not None:
            identity = self.downsample_bn(self.downsample_conv(features), route.norm_key)
        return self.relu(residual + identity)


class TSMResNet(nn.Module):
    """TSM-ResNet (vanilla) or TSM-FFN, taking videos (N, T, 3, H, W) and returning frame-averaged logits.

    Parameters
    ----------
    arch : str
        A key of ``ARCH_SPECS``.
    num_classes : int
        Classifier outputs.
    ffn_frames : tuple of int or None
        The trained frame counts of TSM-FFN (one branch each); None for vanilla TSM.
    shift_mode : str
        "per-video" (the shift never crosses videos) or "official" (``forward_rates`` groups every branch's batch in
        clips of the highest frame count, as the official FFN training did).
    fold_div : int
        1/fold_div of the channels shifted each way.
    dropout : float
        Dropout before the classifier.
    channels_last : bool
        Run the (N*T, 3, H, W) view and the weights in channels_last memory format.
    private_bn : bool
        FFN: a BatchNorm set per branch (True) or one shared set (ablation).
    weight_alteration : bool
        FFN: per-branch Weight Alteration (True) or none (ablation).
    wa_init : str
        "as-run" (kaiming fan_out, what the official code ran) or "paper" (N(0, 1e-3)).
    shift_impl : str
        "autograd", "naive" (benchmark baseline only) or "none" (a 2D ResNet, for single-image pretraining).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        ffn_frames: tuple[int, ...] | None,
        shift_mode: str,
        fold_div: int,
        dropout: float,
        channels_last: bool,
        private_bn: bool,
        weight_alteration: bool,
        wa_init: str,
        shift_impl: str,
    ) -> None:
        super().__init__()
        spec = ARCH_SPECS[arch]
        self.spec = spec
        self.trained_frames: tuple[int, ...] | None = tuple(sorted(ffn_frames)) if ffn_frames else None
        self.shift_mode = shift_mode
        self.channels_last = channels_last
        branch_keys = tuple(str(frames) for frames in self.trained_frames) if self.trained_frames else ()
        self.norm_keys = branch_keys if (branch_keys and private_bn) else (SHARED_BRANCH,)
        self.wa_keys = branch_keys if (branch_keys and weight_alteration) else ()
        self._build_stem(spec)
        self.layer_names = self._build_stages(spec, fold_div, shift_impl)
        self.feature_dim = spec.widths[-1] * BLOCK_EXPANSION[spec.block]
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights(wa_init)
        self.config: dict = {}

    def _build_stem(self, spec: ArchSpec) -> None:
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(3, spec.stem_channels, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, spec.stem_channels, 3, stride=2, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = BranchNorm(spec.stem_channels, self.norm_keys)
        self.relu = nn.ReLU(inplace=True)

    def _build_stages(self, spec: ArchSpec, fold_div: int, shift_impl: str) -> list[str]:
        names = []
        in_channels = spec.stem_channels
        for stage_index, (blocks, width, stride) in enumerate(zip(spec.layers, spec.widths, spec.stage_strides)):
            stage = []
            for block_index in range(blocks):
                stage.append(
                    TemporalBlock(
                        spec.block, in_channels, width, stride if block_index == 0 else 1,
                        self.norm_keys, self.wa_keys, fold_div, shift_impl,
                    )
                )
                in_channels = width * BLOCK_EXPANSION[spec.block]
            name = f"layer{stage_index + 1}"
            setattr(self, name, nn.ModuleList(stage))
            names.append(name)
        return names

    def _init_weights(self, wa_init: str) -> None:
        """Kaiming fan_out for convs (WA included: what the official code ran), BN 1/0, head N(0, 1e-3)/0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if wa_init == "paper":
            for module in self.modules():
                if isinstance(module, WeightAlteration):
                    for conv in module.convs.values():
                        nn.init.normal_(conv.weight, 0.0, PAPER_WA_STD)
        nn.init.normal_(self.fc.weight, 0.0, HEAD_INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def branch_for(self, num_frames: int) -> int | None:
        """The trained frame count used at ``num_frames``: nearest, ties to the larger; None for vanilla TSM."""
        if self.trained_frames is None:
            return None
        if num_frames < 1:
            raise ValueError(f"frame count must be positive, got {num_frames}")
        return min(self.trained_frames, key=lambda trained: (abs(trained - num_frames), -trained))

    def _route(self, branch: int | None, clip_len: int) -> Route:
        branch_key = SHARED_BRANCH if branch is None else str(branch)
        norm_key = branch_key if branch_key in self.norm_keys else SHARED_BRANCH
        wa_key = branch_key if branch_key in self.wa_keys else None
        return Route(norm_key=norm_key, wa_key=wa_key, clip_len=clip_len)

    def _frame_logits(self, frames: torch.Tensor, route: Route) -> torch.Tensor:
        """Per-frame logits of (N*T, 3, H, W) frames."""
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        features = self.maxpool(self.relu(self.bn1(self.conv1(frames), route.norm_key)))
        for name in self.layer_names:
            for block in getattr(self, name):
                features = block(features, route)
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)
        return self.fc(self.dropout(pooled))

    def _video_logits(self, videos: torch.Tensor, branch: int | None, clip_len: int) -> torch.Tensor:
        if videos.dim() != 5 or videos.shape[2] != 3:
            raise ValueError(f"model input must be (N, T, 3, H, W), got shape {tuple(videos.shape)}")
        num_videos, num_frames = videos.shape[:2]
        frames = videos.reshape(num_videos * num_frames, *videos.shape[2:])
        logits = self._frame_logits(frames, self._route(branch, clip_len))
        return logits.view(num_videos, num_frames, -1).mean(dim=1)

    def forward(self, videos: torch.Tensor | dict[int, torch.Tensor]) -> torch.Tensor | dict[int, torch.Tensor]:
        """Logits (N, num_classes) of videos (N, T, 3, H, W), averaged over frames; FFN uses ``branch_for(T)``.

        A dict {T: videos} is passed to ``forward_rates`` (so DistributedDataParallel, which only wraps
        ``forward``, can run the multi-rate training step: ``ddp_model({4: x4, 8: x8, 16: x16})``).
        """
        if isinstance(videos, dict):
            return self.forward_rates(videos)
        num_frames = videos.shape[1]
        return self._video_logits(videos, self.branch_for(num_frames), clip_len=num_frames)

    def forward_rates(self, videos_by_rate: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Logits for each frame count of a multi-rate batch, each through its own branch.

        Parameters
        ----------
        videos_by_rate : dict
            {T: (N, T, 3, H, W)}. For TSM-FFN every T must be a trained frame count; vanilla TSM accepts any.

        Returns
        -------
        dict
            {T: logits (N, num_classes)}.
        """
        if not videos_by_rate:
            raise ValueError("forward_rates needs at least one {frames: tensor} entry")
        highest = max(videos_by_rate)
        results = {}
        for rate in sorted(videos_by_rate):
            videos = videos_by_rate[rate]
            if videos.dim() != 5 or videos.shape[1] != rate:
                raise ValueError(f"forward_rates: the tensor under key {rate} has shape {tuple(videos.shape)}, "
                                 f"expected (N, {rate}, 3, H, W)")
            if self.trained_frames is not None and rate not in self.trained_frames:
                raise ValueError(f"forward_rates: {rate} frames is not a trained frame count "
                                 f"{self.trained_frames}; use model(x) for other frame counts")
            branch = rate if self.trained_frames is not None else None
            clip_len = highest if self.shift_mode == "official" else rate
            results[rate] = self._video_logits(videos, branch, clip_len)
        return results


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)

