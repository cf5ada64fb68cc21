"""The TEA family: TEA and TEA-FFN (registered as "tea_res2net50" and "tea_tiny").

TEA (Li et al., "TEA: Temporal Excitation and Aggregation for Action Recognition", CVPR 2020) is a Res2Net
bottleneck network whose blocks add two temporal operations:

- motion excitation (ME): after the block's first 1x1 convolution, a squeeze to C/16 channels, the difference
  between the next frame's (depthwise 3x3 convolved) squeezed features and the current frame's, pooled over space,
  expanded back to C channels and turned into a per-channel gate ``sigmoid(.) - 0.5``: ``x + x * gate``;
- multiple temporal aggregation (MTA): the Res2Net split into `scale` groups, each group first passing through a
  learnable temporal shift, a depthwise 3-tap convolution along time per channel (initialised as the identity,
  and for the last group as a TSM-like shift of half the channels each way).

TEA-FFN (Frame Flexible Network on TEA, FFN-pytorch 2D_Network/ops/backbone/resnet_TEA_FFN.py) is the same network
converted by ``model.ffn_parts.convert_to_ffn`` with private BatchNorms per trained frame count (every BatchNorm:
stem, block, ME and downsample) and no Weight Alteration. Every convolution (the temporal ones included) and the
classifier are shared. Module names are ours; ``OFFICIAL_TEA_KEY_RULES`` maps the official names onto them.

Unlike the official code, the temporal modules are stateless: each call groups its frames in clips of the frame
count it is given (``temporal_mode="official"`` reproduces the official training grouping instead, see
`TEANet.training_clip_frames`), and the head pools adaptively, so any frame size runs (the official fixed 7x7
average pool only takes 193 to 224 px; at those sizes both agree).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from model.ffn_parts import convert_to_ffn
from model.interface import InputSpec, VideoModel, check_choice
from model.official_checkpoints import (
    DATA_PARALLEL_PREFIX,
    KeyRules,
    bare_official_key,
    compile_rules,
    load_checkpoint_file,
    map_state_dict,
    unwrap_state_dict,
    without_data_parallel_prefix,
)
from model.pretrained import BackboneLoad
from model.registry import (
    ImagePretraining,
    OfficialFile,
    register_image_pretraining,
    register_model,
    register_official_reader,
    register_recipe,
    register_reference_run,
)

FAMILY = "tea"
DEFAULT_DROPOUT = 0.5
TEMPORAL_MODES = ("per-video", "official")
HEAD_INIT_STD = 1e-3
BOTTLENECK_EXPANSION = 4
RES2NET_WIDTH_DIVISOR = 64
# ME's gate is sigmoid(z) - 0.5 applied as x + x * gate, i.e. x * (sigmoid(z) + ME_GATE_OFFSET).
ME_GATE_OFFSET = 0.5
# Taps of the temporal shift convolution (weight[:, 0, k] multiplies frame t - 1 + k).
PREVIOUS_TAP, CURRENT_TAP, NEXT_TAP = 0, 1, 2
TEMPORAL_KERNEL = 3
SHIFT_INITS = ("identity", "shift")
# Input frames are downsampled 32 times (stem and stages); smaller frames would end below one pixel.
TOTAL_STRIDE = 32


@dataclass(frozen=True)
class TEASpec:
    """Layout of a TEA backbone (a Res2Net with ME and temporal shift convolutions in every block).

    Attributes
    ----------
    layers : tuple of int
        Blocks per stage.
    planes : tuple of int
        Planes per stage (the block outputs ``4 * planes`` channels).
    base_width : int
        Res2Net base width: each of the `scale` groups has ``planes * base_width // 64`` channels.
    scale : int
        Res2Net groups per block (at least 2).
    stem : str
        "imagenet" (7x7 stride-2 conv + 3x3 stride-2 max pool) or "tiny" (3x3 stride-2 conv, no pool).
    stem_channels : int
        Channels after the stem.
    stage_strides : tuple of int
        Stride of the first block of each stage.
    me_reduction : int
        ME squeezes the block's ``width * scale`` channels by this factor.
    """

    layers: tuple[int, ...]
    planes: tuple[int, ...]
    base_width: int
    scale: int
    stem: str
    stem_channels: int
    stage_strides: tuple[int, ...]
    me_reduction: int


ARCH_SPECS: dict[str, TEASpec] = {
    # Res2Net-50 26w x 4s, the backbone of the TEA paper and of the official TEA-FFN.
    "tea_res2net50": TEASpec((3, 4, 6, 3), (64, 128, 256, 512), 26, 4, "imagenet", 64, (1, 2, 2, 2), 16),
    # CPU demo network: 1, 1, 2, 1 blocks (the second block of stage 3 chains its groups and keeps the identity
    # shortcut), groups of 4 / 8 / 16 / 32 channels, every stage stride 2, ME squeezing by 4.
    "tea_tiny": TEASpec((1, 1, 2, 1), (8, 16, 32, 64), 32, 4, "tiny", 16, (2, 2, 2, 2), 4),
}


_BLOCK = r"^(layer\d+\.\d+)"
# Official key (without "module." and "base_model.") -> ours. The official TEA-FFN suffixes every BatchNorm with its
# frame count (bn1_4, bns_4.0, me.bn3_16, downsample_bn_8); the TEA baseline and the Res2Net ImageNet checkpoint use
# plain names (bns.0, downsample.0 / downsample.1). The temporal shift convolutions are Conv1d modules (.conv).
OFFICIAL_TEA_KEY_RULES: KeyRules = compile_rules((
    (r"^new_fc\.(weight|bias)$", r"fc.\1"),
    (r"^conv1\.weight$", r"conv1.weight"),
    (r"^bn1_(\d+)\.(\w+)$", r"bn1.norms.\1.\2"),
    (r"^bn1\.(\w+)$", r"bn1.\1"),
    (_BLOCK + r"\.(conv[13])\.weight$", r"\1.\2.weight"),
    (_BLOCK + r"\.(bn[13])_(\d+)\.(\w+)$", r"\1.\2.norms.\3.\4"),
    (_BLOCK + r"\.(bn[13])\.(\w+)$", r"\1.\2.\3"),
    (_BLOCK + r"\.me\.(conv[123])\.weight$", r"\1.me.\2.weight"),
    (_BLOCK + r"\.me\.(bn[13])_(\d+)\.(\w+)$", r"\1.me.\2.norms.\3.\4"),
    (_BLOCK + r"\.me\.(bn[13])\.(\w+)$", r"\1.me.\2.\3"),
    (_BLOCK + r"\.convs\.(\d+)\.weight$", r"\1.convs.\2.weight"),
    (_BLOCK + r"\.bns_(\d+)\.(\d+)\.(\w+)$", r"\1.bns.\3.norms.\2.\4"),
    (_BLOCK + r"\.bns\.(\d+)\.(\w+)$", r"\1.bns.\2.\3"),
    (_BLOCK + r"\.shifts\.(\d+)\.conv\.weight$", r"\1.shifts.\2.weight"),
    (_BLOCK + r"\.downsample\.0\.weight$", r"\1.downsample_conv.weight"),
    (_BLOCK + r"\.downsample\.1\.(\w+)$", r"\1.downsample_bn.\2"),
    (_BLOCK + r"\.downsample_conv\.weight$", r"\1.downsample_conv.weight"),
    (_BLOCK + r"\.downsample_bn_(\d+)\.(\w+)$", r"\1.downsample_bn.norms.\2.\3"),
))

# Keys of an official TEA / TEA-FFN state dict (after an optional "module."): ME exists only in TEA; the stem's
# BatchNorm carries the branch's frame count in TEA-FFN.
OFFICIAL_TEA_MARKER = re.compile(r"^base_model\.layer1\.0\.me\.conv1\.weight$")
OFFICIAL_FFN_STEM_NORM = re.compile(r"^base_model\.bn1_(\d+)\.weight$")
# Source keys of the Res2Net ImageNet classifier (never loaded) and model keys no ImageNet Res2Net holds.
RES2NET_HEAD_PREFIXES = ("fc.",)
NOT_IN_RES2NET = ("fc.", ".me.", ".shifts.")
RES2NET_IMAGENET_FILE = "res2net50_26w_4s-06e79181.pth"


def as_clips(tensor: torch.Tensor, clip_frames: int) -> torch.Tensor:
    """View (N*T, ...) as (N, T, ...) with T = `clip_frames` (no copy).

    Raises
    ------
    ValueError
        When the number of frames is not a multiple of `clip_frames`.
    """
    total = tensor.shape[0]
    if clip_frames < 1 or total % clip_frames != 0:
        raise ValueError(f"TEA's temporal modules cannot group {total} frames in clips of {clip_frames}; with "
                         "temporal_mode='official' every branch's batch needs a multiple of the highest trained "
                         "frame count in frames (use a batch size that makes it so, or temporal_mode='per-video')")
    return tensor.view(total // clip_frames, clip_frames, *tensor.shape[1:])


class TemporalShiftConv(nn.Module):
    """TEA's learnable temporal shift: a depthwise convolution along time, 3 taps per channel, zero-padded.

    ``out[t] = w[c, 0, 0] * x[t - 1] + w[c, 0, 1] * x[t] + w[c, 0, 2] * x[t + 1]`` within each clip (frames outside
    the clip count as zero), the map of a ``Conv1d(C, C, 3, padding=1, groups=C)`` run over time at every pixel.
    It runs on the (N*T, C, H, W) frames directly (three scaled, shifted copies) instead of permuting them to
    (N*H*W, C, T) and back.

    Parameters
    ----------
    channels : int
        Channels C.
    init : str
        "identity" (centre tap 1) or "shift" (the first C // 2 channels read frame t + 1, the next C // 2 frame
        t - 1, the rest t: TSM's shift of half the channels).
    """

    def __init__(self, channels: int, init: str) -> None:
        super().__init__()
        if init not in SHIFT_INITS:
            raise ValueError(f"TemporalShiftConv init={init!r} is not one of {list(SHIFT_INITS)}")
        self.channels = int(channels)
        self.weight = nn.Parameter(torch.zeros(self.channels, 1, TEMPORAL_KERNEL))
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set the identity or the shift taps."""
        with torch.no_grad():
            self.weight.zero_()
            if self.init == "identity":
                self.weight[:, 0, CURRENT_TAP] = 1.0
                return
            half = self.channels // 2
            self.weight[:half, 0, NEXT_TAP] = 1.0
            self.weight[half:2 * half, 0, PREVIOUS_TAP] = 1.0
            self.weight[2 * half:, 0, CURRENT_TAP] = 1.0

    def forward(self, frames: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """The convolution of (N*T, C, H, W) frames whose clips are `clip_frames` consecutive frames."""
        clips = as_clips(frames, clip_frames)
        taps = self.weight.to(frames.dtype).view(1, 1, self.channels, TEMPORAL_KERNEL, 1, 1)
        output = clips * taps[:, :, :, CURRENT_TAP]
        if clip_frames > 1:
            output[:, 1:].addcmul_(clips[:, :-1], taps[:, :, :, PREVIOUS_TAP])
            output[:, :-1].addcmul_(clips[:, 1:], taps[:, :, :, NEXT_TAP])
        return output.view(frames.shape)


class MotionExcitation(nn.Module):
    """TEA's motion excitation (ME): a per-frame channel gate computed from feature differences between frames.

    ``b = bn1(conv1(x))`` squeezes C to C / reduction channels; the motion of frame t is
    ``pool(conv2(b)[t + 1]) - pool(b[t])`` (conv2 a depthwise 3x3 convolution, pool the spatial mean), zero for the
    last frame of a clip; ``gate = sigmoid(bn3(conv3(motion))) - 0.5`` (conv3 expands back to C channels);
    the output is ``x + x * gate``. Pooling each term before the difference equals pooling the difference (the mean
    is linear) and touches the small pooled tensors only.

    Parameters
    ----------
    channels : int
        Channels C of the features.
    reduction : int
        The squeeze factor.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        squeezed = channels // reduction
        if squeezed < 1:
            raise ValueError(f"motion excitation: {channels} channels cannot be squeezed by {reduction}")
        self.conv1 = nn.Conv2d(channels, squeezed, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(squeezed)
        self.conv2 = nn.Conv2d(squeezed, squeezed, 3, padding=1, groups=squeezed, bias=False)
        self.conv3 = nn.Conv2d(squeezed, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, features: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """The excited (N*T, C, H, W) features whose clips are `clip_frames` consecutive frames."""
        squeezed = self.bn1(self.conv1(features))
        current = as_clips(squeezed.mean(dim=(2, 3)), clip_frames)
        following = as_clips(self.conv2(squeezed).mean(dim=(2, 3)), clip_frames)
        last_frame = torch.zeros_like(current[:, :1])
        motion = torch.cat([following[:, 1:] - current[:, :-1], last_frame], dim=1)
        gate = self.bn3(self.conv3(motion.reshape(*squeezed.shape[:2], 1, 1)))
        return features * (torch.sigmoid(gate) + ME_GATE_OFFSET)


class TEABlock(nn.Module):
    """A Res2Net bottleneck with motion excitation and a temporal shift convolution per group.

    conv1 1x1 -> BN -> ReLU -> ME -> split into `scale` groups of `width` channels. Groups 0 .. scale-2: add the
    previous group's output (not in the first block of a stage), temporal shift conv, 3x3 conv (carries the
    stride), BN, ReLU. The last group: temporal shift conv only, then a 3x3 average pool with the stride in the first
    block of a stage. Concatenate -> conv3 1x1 -> BN -> add the shortcut (1x1 conv + BN where the shape changes)
    -> ReLU.

    Parameters
    ----------
    in_channels, planes, stride : int
        Input channels, planes (the block outputs 4 * planes channels) and the stride.
    base_width, scale, me_reduction : int
        As `TEASpec`.
    first : bool
        The first block of a stage (Res2Net's "stage" block: groups not chained, last group pooled).
    """

    def __init__(self, in_channels: int, planes: int, stride: int, base_width: int, scale: int, me_reduction: int,
                 first: bool) -> None:
        super().__init__()
        if scale < 2:
            raise ValueError(f"TEA blocks need a Res2Net scale of at least 2, got {scale}")
        width = planes * base_width // RES2NET_WIDTH_DIVISOR
        inner = width * scale
        out_channels = planes * BOTTLENECK_EXPANSION
        self.width = width
        self.first = first
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.me = MotionExcitation(inner, me_reduction)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False) for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        self.shifts = nn.ModuleList(
            [TemporalShiftConv(width, "identity") for _ in range(scale - 1)] + [TemporalShiftConv(width, "shift")])
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if first else None
        self.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample_conv = None
        self.downsample_bn = None
        if stride != 1 or in_channels != out_channels:
            self.downsample_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.downsample_bn = nn.BatchNorm2d(out_channels)

    def _aggregate(self, features: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Multiple temporal aggregation: the groups of `features`, shifted, convolved and chained."""
        groups = torch.split(features, self.width, dim=1)
        outputs = []
        for index, (shift, conv, norm) in enumerate(zip(self.shifts, self.convs, self.bns)):
            group = groups[index] if (index == 0 or self.first) else outputs[-1] + groups[index]
            outputs.append(self.relu(norm(conv(shift(group, clip_frames)))))
        last = self.shifts[-1](groups[-1], clip_frames)
        outputs.append(self.pool(last) if self.pool is not None else last)
        return torch.cat(outputs, dim=1)

    def forward(self, features: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """The block on (N*T, C, H, W) features whose clips are `clip_frames` consecutive frames."""
        residual = self.me(self.relu(self.bn1(self.conv1(features))), clip_frames)
        residual = self.bn3(self.conv3(self._aggregate(residual, clip_frames)))
        identity = features
        if self.downsample_conv is not None:
            identity = self.downsample_bn(self.downsample_conv(features))
        return self.relu(residual + identity)


class TEANet(VideoModel):
    """TEA (vanilla) or TEA-FFN, taking videos (N, T, 3, H, W) and returning frame-averaged logits.

    Parameters
    ----------
    arch : str
        A key of ``ARCH_SPECS``.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int or None
        The trained frame counts of TEA-FFN (one BatchNorm set each); None for vanilla TEA.
    temporal_mode : str
        "per-video" (ME and the shift convolutions never cross videos) or "official" (a multi-frame-count training
        step groups every branch's frames in clips of the highest trained frame count, the state the official
        TEA-FFN training is in after its first evaluation).
    dropout : float
        Dropout before the classifier.
    private_norms : bool
        FFN: a BatchNorm set per branch (True) or one shared set (ablation).
    """

    OFFICIAL_KEY_PREFIX = "base_model."
    OFFICIAL_KEY_RULES = OFFICIAL_TEA_KEY_RULES

    def __init__(self, arch: str, num_classes: int, trained_frames: tuple[int, ...] | None, temporal_mode: str,
                 dropout: float, private_norms: bool) -> None:
        super().__init__()
        spec = ARCH_SPECS[arch]
        self.arch = arch
        self.trained_frames = tuple(sorted(trained_frames)) if trained_frames else None
        self.temporal_mode = temporal_mode
        self.input_spec = InputSpec(min_frames=1, min_size=TOTAL_STRIDE)
        self._build_stem(spec)
        self.layer_names = self._build_stages(spec)
        self.feature_dim = spec.planes[-1] * BOTTLENECK_EXPANSION
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        if self.trained_frames:
            convert_to_ffn(self, self.trained_frames, private_norms=private_norms, weight_alteration=False)
        self._init_weights()

    @property
    def classifier(self) -> nn.Linear:
        """The shared classifier."""
        return self.fc

    def _build_stem(self, spec: TEASpec) -> None:
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(3, spec.stem_channels, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, spec.stem_channels, 3, stride=2, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(spec.stem_channels)
        self.relu = nn.ReLU(inplace=True)

    def _build_stages(self, spec: TEASpec) -> list[str]:
        names = []
        in_channels = spec.stem_channels
        for stage_index, (blocks, planes, stride) in enumerate(zip(spec.layers, spec.planes, spec.stage_strides)):
            stage = []
            for block_index in range(blocks):
                first = block_index == 0
                stage.append(TEABlock(in_channels, planes, stride if first else 1, spec.base_width, spec.scale,
                                      spec.me_reduction, first))
                in_channels = planes * BOTTLENECK_EXPANSION
            name = f"layer{stage_index + 1}"
            setattr(self, name, nn.ModuleList(stage))
            names.append(name)
        return names

    def _init_weights(self) -> None:
        """Kaiming fan_out for 2D convs, BN 1/0, head N(0, 1e-3)/0; the shift convs keep their identity/shift taps."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.fc.weight, 0.0, HEAD_INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def training_clip_frames(self, frames: int, highest: int) -> int:
        """Frames per clip of ME and the shift convs in a multi-frame-count step.

        "per-video": `frames`. "official" (TEA-FFN): the highest trained frame count, as the official modules
        group every branch once an evaluation call has switched them to the highest count (so the 4F branch treats
        4 consecutive videos as one clip and the 8F branch 2, with 4 / 8 / 16).
        """
        if self.temporal_mode == "official" and self.trained_frames:
            return max(self.trained_frames)
        return frames

    def forward_branch(self, videos: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Frame-averaged logits (N, classes) of videos (N, T, 3, H, W) with the branch in scope."""
        num_videos, frames = videos.shape[:2]
        self.input_spec.check_size(int(videos.shape[-2]), int(videos.shape[-1]))
        images = videos.reshape(num_videos * frames, *videos.shape[2:])
        features = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for name in self.layer_names:
            for block in getattr(self, name):
                features = block(features, clip_frames)
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)
        logits = self.fc(self.dropout(pooled))
        return logits.view(num_videos, frames, -1).mean(dim=1)

    def load_pretrained(self, source: str) -> BackboneLoad:
        """ImageNet initialisation from a Res2Net-50 26w x 4s state dict file (see `load_res2net_weights`)."""
        return load_res2net_weights(self, source)


def load_res2net_weights(model: TEANet, source: str) -> BackboneLoad:
    """Initialise a TEA backbone from an ImageNet Res2Net file; every private BatchNorm copy gets the same values.

    Parameters
    ----------
    model : TEANet
        A TEA model (vanilla or FFN).
    source : str
        Path of a Res2Net state dict in the layout of the res2net50_26w_4s ImageNet checkpoint (conv1, bn1,
        layer*.*.conv1 / bn1 / convs.i / bns.i / conv3 / bn3 / downsample.0 / downsample.1, fc), or a checkpoint
        dict holding it under "state_dict".

    Returns
    -------
    BackboneLoad
        Loaded model keys, the dropped ImageNet classifier keys, and the keys left at init (ME, the temporal
        shift convolutions, the new classifier).

    Raises
    ------
    ValueError
        For "imagenet" (nothing is downloaded) or a file that does not fit the architecture (one line each).
    """
    if source == "imagenet":
        raise ValueError(f"{model.arch}: pretrained='imagenet' is not downloaded; get the Res2Net-50 26w x 4s ImageNet "
                         f"checkpoint ({RES2NET_IMAGENET_FILE}) and pass pretrained=<its path>")
    state_dict = load_checkpoint_file(source)
    state_dict = state_dict.get("state_dict", state_dict)
    translated, missing, unexpected = map_state_dict(model, state_dict, expand_shared_norms=True,
                                                     skip_prefixes=RES2NET_HEAD_PREFIXES)
    not_initialised = [key for key in missing if not any(part in f".{key}" for part in NOT_IN_RES2NET)]
    if not_initialised or unexpected:
        raise ValueError(
            f"{source} does not fit arch={model.arch!r}: {len(not_initialised)} model keys missing (e.g. "
            f"{not_initialised[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); pass a Res2Net "
            "state dict of this architecture (tea_res2net50: the res2net50_26w_4s ImageNet checkpoint)")
    model.load_state_dict(translated, strict=False)
    dropped = [key for key in state_dict if bare_official_key(model, key).startswith(RES2NET_HEAD_PREFIXES)]
    return BackboneLoad(source=str(source), loaded=sorted(translated), dropped=dropped, left_at_init=missing)


def is_official_tea_state_dict(state_dict: Mapping[str, Any]) -> tuple[int, ...] | None | Literal[False]:
    """Recognise an official TEA / TEA-FFN state dict (FFN-pytorch 2D_Network) from its key names.

    Parameters
    ----------
    state_dict : mapping
        A state dict, with or without the "module." prefix, or a checkpoint dict holding it under "state_dict".

    Returns
    -------
    tuple of int, None or False
        The trained frame counts of a TEA-FFN file (e.g. (4, 8, 16)), None for a vanilla TEA file, False for
        anything else. Official files are always the Res2Net-50 backbone: build them as "tea_res2net50".
    """
    state_dict = unwrap_state_dict(state_dict)
    keys = [key[len(DATA_PARALLEL_PREFIX):] if key.startswith(DATA_PARALLEL_PREFIX) else key
            for key in state_dict if isinstance(key, str)]
    if not any(OFFICIAL_TEA_MARKER.match(key) for key in keys):
        return False
    frames = sorted({int(match.group(1)) for key in keys if (match := OFFICIAL_FFN_STEM_NORM.match(key))})
    return tuple(frames) if frames else None


def build_tea(
    arch: str,
    num_classes: int,
    trained_frames: tuple[int, ...] | None = None,
    *,
    temporal_mode: str = "per-video",
    dropout: float = DEFAULT_DROPOUT,
    private_norms: bool = True,
) -> TEANet:
    """Build TEA (``trained_frames=None``) or TEA-FFN (``trained_frames=(4, 8, 16)``).

    The registry's entry points ("tea_res2net50", "tea_tiny") call this with their ``arch``; use
    ``model.build_model(arch, ...)``.

    Parameters
    ----------
    arch : str
        A key of ARCH_SPECS.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int, optional
        Trained frame counts of TEA-FFN; None builds vanilla TEA.
    temporal_mode : str
        "per-video" (default; ME and the shift convolutions never cross videos) or "official" (reproduces the
        official TEA-FFN training after its first evaluation call: a multi-frame-count step groups every branch's
        frames in clips of the highest trained frame count). Evaluation (``model(videos)``) is per video in both.
    dropout : float
        Dropout before the classifier (0.5).
    private_norms : bool
        FFN: private BatchNorms per frame count (False: one shared set, an ablation).
    """
    check_choice("temporal_mode", temporal_mode, TEMPORAL_MODES)
    return TEANet(arch=arch, num_classes=num_classes, trained_frames=trained_frames, temporal_mode=temporal_mode,
                  dropout=float(dropout), private_norms=bool(private_norms))


for _arch in ARCH_SPECS:
    register_model(_arch, family=FAMILY)(functools.partial(build_tea, _arch))

# The official TEA-FFN run on Something-Something V1 (FFN-pytorch, 2D_Network: exp/tea_sthv1_FFN/run.sh, main_FFN.py,
# opts.py): 2 GPUs x 16 videos, lr 0.02 at the total batch of 32, x0.1 at epochs 30, 40 and 45 of 50, weight decay
# 5e-4 without norms and biases, classifier lr x5 / x10, dropout 0.5, fp16 AMP (the --gd 20 clipping is not applied
# under it) with fp32 validation at 16 frames, multi-scale crop 224. The published run used nn.DataParallel, whose
# replicas drop the official modules' after-evaluation state, so the temporal modules stay per video (the default).
OFFICIAL_RECIPE = {
    "batch_size": 16, "total_batch": 32, "lr": 0.02, "lr_batch": 32, "optimizer": "sgd", "momentum": 0.9,
    "weight_decay": 5e-4, "param_groups": "official-tsm", "schedule": "step", "lr_steps": [30, 40, 45],
    "warmup_epochs": 0.0, "epochs": 50, "dropout": 0.5, "clip_grad": None, "precision": "fp16",
    "val_precision": "fp32", "crop_size": 224, "multi_scale": True, "sampling": "independent",
}
register_recipe(FAMILY, "official", OFFICIAL_RECIPE)
register_reference_run(FAMILY, "tea_res2net50", (4, 8, 16))


class FrameWise(nn.Module):
    """Stands in for ME or a temporal shift convolution in the 2D Res2Net: returns the frames unchanged."""

    def forward(self, features: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """The input itself."""
        return features


def build_image_res2net(arch: str, num_classes: int) -> TEANet:
    """The 2D counterpart of a TEA for single-image pretraining: its Res2Net, without ME and the temporal shift
    convolutions (the network TEA's authors initialise from ImageNet)."""
    network = build_tea(arch, num_classes, dropout=0.0)
    for name in network.layer_names:
        for block in getattr(network, name):
            block.me = FrameWise()
            block.shifts = nn.ModuleList(FrameWise() for _ in block.shifts)
    return network


RES2NET_EXPORT_RULES: KeyRules = compile_rules((
    (_BLOCK + r"\.downsample_conv\.weight$", r"\1.downsample.0.weight"),
    (_BLOCK + r"\.downsample_bn\.(\w+)$", r"\1.downsample.1.\2"),
))


def to_res2net_state_dict(network: TEANet) -> dict[str, torch.Tensor]:
    """The state dict of a vanilla TEA or its 2D Res2Net under the Res2Net ImageNet file's names (``downsample.0``
    and ``.1``; every other name is already the file's), the layout `load_res2net_weights` reads.

    Raises
    ------
    ValueError
        For a TEA-FFN (private BatchNorm copies have no Res2Net name).
    """
    exported = {}
    for key, value in network.state_dict().items():
        if ".norms." in key:
            raise ValueError(f"to_res2net_state_dict: {key} has no Res2Net name; export a vanilla model")
        for pattern, replacement in RES2NET_EXPORT_RULES:
            if pattern.match(key):
                key = pattern.sub(replacement, key)
                break
        exported[key] = value.detach().clone()
    return exported


# TEA starts from an ImageNet Res2Net; ME and the temporal shift convolutions keep their initialisation.
for _arch in ARCH_SPECS:
    register_image_pretraining(_arch, ImagePretraining(build=functools.partial(build_image_res2net, _arch),
                                                       export=to_res2net_state_dict, input_spec=InputSpec()))


@register_official_reader(FAMILY)
def read_official_tea(checkpoint: Mapping[str, Any]) -> OfficialFile | None:
    """An official TEA / TEA-FFN file: always the Res2Net-50 backbone; branches and classes from its keys."""
    trained = is_official_tea_state_dict(checkpoint)
    if trained is False:
        return None
    state = without_data_parallel_prefix(checkpoint)
    return OfficialFile("tea_res2net50", trained, int(state["new_fc.weight"].shape[0]))
