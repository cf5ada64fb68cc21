"""The SlowFast family: SlowFast and SlowFast-FFN (registered as "slowfast_r50" and "slowfast_tiny").

SlowFast (Feichtenhofer et al., ICCV 2019) runs a video through two 3D ResNets: a Fast pathway over every sampled
frame with few channels (1/beta of the Slow ones) and a Slow pathway over every alpha-th frame with many channels.
After the stem and after res2, res3 and res4 a lateral connection (a (7, 1, 1) convolution of temporal stride
alpha, BatchNorm, ReLU) turns Fast features into 2 x Fast channels at the Slow frame rate and concatenates them to
the Slow features. The head averages each pathway over time and space, concatenates them and applies dropout and
one Linear layer.

The frame count T of the interface is the number of Fast frames (the frames sampled from the video); the model
builds the Slow pathway inside with the rule PySlowFast's evaluation packing uses: the frames at
``linspace(0, T - 1, T // alpha)`` truncated to integers. T must be a multiple of alpha (the lateral connections
need T / alpha Fast positions per Slow frame).

SlowFast-FFN (FFN-pytorch, 3D_Network) is the same network converted by ``model.ffn_parts.convert_to_ffn``: every
BatchNorm (stems, lateral connections, every block and shortcut, in both pathways) gets a private copy per trained
frame count, and every residual block of both pathways applies Weight Alteration (``x + wa(x)``, a depthwise
1x1x1 convolution) to the input of its first convolution; the shortcut sees the unaltered input. Convolutions,
including the lateral ones, and the head are shared. Module names are ours; ``OFFICIAL_SLOWFAST_KEY_RULES`` maps
the PySlowFast / FFN-pytorch names onto them.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.ffn_parts import BranchNorm, WeightAlterationSlot, branch_scope, convert_to_ffn, weight_alteration_modules
from model.inflation import inflate_temporal_kernels
from model.interface import InputSpec, VideoModel, check_choice
from model.official_checkpoints import (
    DATA_PARALLEL_PREFIX,
    KeyRules,
    bare_official_key,
    compile_rules,
    load_checkpoint_file,
    map_state_dict,
    strip_prefix,
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

FAMILY = "slowfast"
DEFAULT_DROPOUT = 0.5
BOTTLENECK_EXPANSION = 4
# PySlowFast's input convention for SlowFast: RGB, mean 0.45 and std 0.225 on the 0-1 scale in every channel.
# (Its Something-Something loaders decode JPEG frames with OpenCV, which gives BGR, and REVERSE_INPUT_CHANNEL turns
# them into RGB, the order of its Kinetics loader and weights.)
SLOWFAST_MEAN = (0.45, 0.45, 0.45)
SLOWFAST_STD = (0.225, 0.225, 0.225)
SLOWFAST_CHANNEL_ORDER = "RGB"
SLOW_MODES = ("per-clip", "official")
WA_INITS = ("as-run", "paper")
PAPER_WA_STD = 1e-3
HEAD_INIT_STD = 0.01
STEM_SPATIAL_KERNEL = 7
CAFFE2_SUFFIX = ".pkl"
# Source keys of a pretraining classifier, never loaded into a new model.
PRETRAINED_HEAD_PREFIXES = ("head.",)
# Model keys a pretrained SlowFast cannot provide: FFN's Weight Alteration and the new classifier.
NOT_IN_PRETRAINED = (".wa.convs.", "fc.")


@dataclass(frozen=True)
class SlowFastSpec:
    """Layout of a SlowFast network.

    Attributes
    ----------
    alpha : int
        Fast frames per Slow frame.
    beta_inv : int
        Slow channels per Fast channel (stem, inner and output widths of every stage).
    slow_stem_channels : int
        Slow channels after the stem.
    slow_inner_widths : tuple of int
        Inner (bottleneck) width of res2..res5 in the Slow pathway; outputs are 4 x as wide.
    blocks : tuple of int
        Residual blocks of res2..res5.
    slow_temporal_kernels, fast_temporal_kernels : tuple of int
        Temporal kernel of the stem convolution and of the first convolution of every block of res2..res5.
    stage_strides : tuple of int
        Spatial stride of the first block of res2..res5.
    fusion_kernel : int
        Temporal kernel of the lateral convolutions.
    fusion_ratio : int
        Lateral output channels per Fast channel.
    """

    alpha: int
    beta_inv: int
    slow_stem_channels: int
    slow_inner_widths: tuple[int, ...]
    blocks: tuple[int, ...]
    slow_temporal_kernels: tuple[int, ...]
    fast_temporal_kernels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    fusion_kernel: int
    fusion_ratio: int

    @property
    def fast_stem_channels(self) -> int:
        """Fast channels after the stem."""
        return self.slow_stem_channels // self.beta_inv

    def stage_widths(self, pathway: str) -> list[tuple[int, int]]:
        """(inner, output) widths of res2..res5 of the "slow" or "fast" pathway."""
        divisor = 1 if pathway == "slow" else self.beta_inv
        return [(inner // divisor, BOTTLENECK_EXPANSION * inner // divisor) for inner in self.slow_inner_widths]


# The 16x8 R50 configuration of the official SSv1 runs (FFN-pytorch configs/sth/SLOWFAST_16x8_R50_FFN.yaml;
# PySlowFast's SlowFast R50: alpha 4, beta 1/8, lateral kernel 7 with 2 x Fast channels).
ARCH_SPECS: dict[str, SlowFastSpec] = {
    "slowfast_r50": SlowFastSpec(
        alpha=4, beta_inv=8, slow_stem_channels=64, slow_inner_widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3),
        slow_temporal_kernels=(1, 1, 1, 3, 3), fast_temporal_kernels=(5, 3, 3, 3, 3), stage_strides=(1, 2, 2, 2),
        fusion_kernel=7, fusion_ratio=2,
    ),
    # The CPU demo network: the same two pathways, lateral connections and temporal kernels, one block per stage,
    # narrow (Slow 16 stem channels, Fast 1/4 of Slow).
    "slowfast_tiny": SlowFastSpec(
        alpha=4, beta_inv=4, slow_stem_channels=16, slow_inner_widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1),
        slow_temporal_kernels=(1, 1, 1, 3, 3), fast_temporal_kernels=(5, 3, 3, 3, 3), stage_strides=(1, 2, 2, 2),
        fusion_kernel=7, fusion_ratio=2,
    ),
}
STAGE_NAMES = ("res2", "res3", "res4", "res5")
FUSION_NAMES = ("fuse_stem", "fuse_res2", "fuse_res3", "fuse_res4")
PATHWAYS = ("slow", "fast")


# Official private-BatchNorm suffixes name the Slow frame count of a branch (FFN-pytorch: bn_4 / bn_8 / bn_16 for
# 16 / 32 / 64 Fast frames with alpha 4); our branches are keyed by the Fast frame count, the frames of the input.
OFFICIAL_ALPHA = 4
OFFICIAL_SLOW_SUFFIXES = (4, 8, 16)


def _norm_variants() -> list[tuple[str, str]]:
    """(official suffix, our suffix) for a plain BatchNorm and each official private copy."""
    return [("", "")] + [(f"_{slow}", f".norms.{slow * OFFICIAL_ALPHA}") for slow in OFFICIAL_SLOW_SUFFIXES]


def _official_rules() -> list[tuple[str, str]]:
    """(pattern, replacement) pairs from PySlowFast / FFN-pytorch SlowFast keys to ours."""
    rules = []
    for index, pathway in enumerate(PATHWAYS):
        stem = rf"^s1\.pathway{index}_stem\."
        block = rf"^s([2-5])\.pathway{index}_res(\d+)\."
        ours = rf"{pathway}_res\1.\2."
        rules.append((stem + r"conv\.weight$", f"{pathway}_stem.conv.weight"))
        rules.append((block + r"branch1\.weight$", ours + "shortcut_conv.weight"))
        rules.append((block + r"branch2\.([abc])\.weight$", ours + r"conv_\3.weight"))
        for official, our_norm in _norm_variants():
            rules.append((stem + rf"bn{official}\.(\w+)$", rf"{pathway}_stem.bn{our_norm}.\1"))
            rules.append((block + rf"branch1_bn{official}\.(\w+)$", ours + rf"shortcut_bn{our_norm}.\3"))
            rules.append((block + rf"branch2\.([abc])_bn{official}\.(\w+)$", ours + rf"bn_\3{our_norm}.\4"))
        for slow in OFFICIAL_SLOW_SUFFIXES:
            our_copy = f"wa.convs.{slow * OFFICIAL_ALPHA}.weight"
            rules.append((block + rf"branch2\.adaconv_{slow}\.weight$", ours + our_copy))
    rules.append((r"^s1_fuse\.conv_f2s\.weight$", "fuse_stem.conv.weight"))
    rules.append((r"^s([2-4])_fuse\.conv_f2s\.weight$", r"fuse_res\1.conv.weight"))
    for official, our_norm in _norm_variants():
        rules.append((rf"^s1_fuse\.bn{official}\.(\w+)$", rf"fuse_stem.bn{our_norm}.\1"))
        rules.append((rf"^s([2-4])_fuse\.bn{official}\.(\w+)$", rf"fuse_res\1.bn{our_norm}.\2"))
    rules.append((r"^head\.projection\.(weight|bias)$", r"fc.\1"))
    return rules


OFFICIAL_SLOWFAST_KEY_RULES: KeyRules = compile_rules(_official_rules())
OFFICIAL_MARKER_KEYS = ("s1.pathway0_stem.conv.weight", "s1_fuse.conv_f2s.weight", "head.projection.weight")
OFFICIAL_PRIVATE_NORM = re.compile(r"^s1\.pathway0_stem\.bn_(\d+)\.weight$")

# The Slow frame indices of each branch during an official-mode multi-frame-count call (see SlowFast.slow_mode).
_TRAINING_SLOW_INDEX: contextvars.ContextVar[dict[int, torch.Tensor] | None] = contextvars.ContextVar(
    "slowfast_training_slow_index", default=None
)


def slow_frame_index(frames: int, alpha: int) -> torch.Tensor:
    """The Fast frames the Slow pathway takes: ``linspace(0, T - 1, T // alpha)`` truncated to integers.

    PySlowFast's pathway packing (slowfast/datasets/utils.py, pack_pathway_output), computed in float32 as there:
    16 frames give 0, 5, 10, 15 and 32 frames give 0, 4, 8, 13, 17, 22, 26, 31.
    """
    return torch.linspace(0, frames - 1, frames // alpha, dtype=torch.float32).long()


def official_training_order(frame_counts: Sequence[int]) -> list[int]:
    """The order the official FFN training loader concatenates the frame counts in: highest, then the others up.

    With (16, 32, 64): 64, 16, 32 (FFN-pytorch 3D_Network slowfast/datasets/sth_ffn.py: H, L, M).
    """
    counts = sorted({int(count) for count in frame_counts})
    return counts[-1:] + counts[:-1]


def official_training_slow_index(frame_counts: Sequence[int], alpha: int) -> dict[int, torch.Tensor]:
    """Per frame count, the Slow frame indices (relative to its own Fast frames) of the official FFN training.

    The official training loader concatenates the Fast frames of every count (`official_training_order`), builds the
    Slow pathway over the concatenation with `slow_frame_index` and gives each count its consecutive share of T / alpha
    Slow frames. With (16, 32, 64) and alpha 4: 16 -> 1, 5, 10, 14; 32 -> 2, 6, 10, 14, 18, 22, 26, 31;
    64 -> 0, 4, 8, 12, 16, 20, 24, 28, 32, 37, 41, 45, 49, 53, 57, 61.

    Raises
    ------
    ValueError
        If a count is not a multiple of alpha, or a share would reach into another count's frames.
    """
    order = official_training_order(frame_counts)
    for count in order:
        if count % alpha:
            raise ValueError(f"frame count {count} is not a multiple of alpha={alpha}")
    concatenated = slow_frame_index(sum(order), alpha)
    index_by_frames, first_frame, first_slow = {}, 0, 0
    for count in order:
        share = concatenated[first_slow:first_slow + count // alpha] - first_frame
        if share.numel() and (int(share.min()) < 0 or int(share.max()) >= count):
            raise ValueError(f"the official Slow sampling over {order} reaches outside the {count}-frame clip")
        index_by_frames[count] = share
        first_frame += count
        first_slow += count // alpha
    return index_by_frames


class Stem(nn.Module):
    """A pathway's stem: Conv3d (t, 7, 7) of spatial stride 2, BatchNorm, ReLU, max pool (1, 3, 3) of stride 2."""

    def __init__(self, out_channels: int, temporal_kernel: int) -> None:
        super().__init__()
        half = STEM_SPATIAL_KERNEL // 2
        self.conv = nn.Conv3d(3, out_channels, (temporal_kernel, STEM_SPATIAL_KERNEL, STEM_SPATIAL_KERNEL),
                              stride=(1, 2, 2), padding=(temporal_kernel // 2, half, half), bias=False)
        self.bn = nn.BatchNorm3d(out_channels)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, H, W) -> (N, C, T, H/4, W/4)."""
        features = nn.functional.relu(self.bn(self.conv(clips)), inplace=True)
        return nn.functional.max_pool3d(features, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))


class LateralFusion(nn.Module):
    """Fast-to-Slow lateral connection: Conv3d (k, 1, 1) of temporal stride alpha, BatchNorm, ReLU, concatenated."""

    def __init__(self, fast_channels: int, ratio: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(fast_channels, ratio * fast_channels, (kernel, 1, 1), stride=(alpha, 1, 1),
                              padding=(kernel // 2, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(ratio * fast_channels)

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        """Slow features with the fused Fast features appended along the channels."""
        fused = nn.functional.relu(self.bn(self.conv(fast)), inplace=True)
        return torch.cat([slow, fused], dim=1)


class Bottleneck3d(nn.Module):
    """A 3D ResNet bottleneck: (t, 1, 1) -> (1, 3, 3) with the spatial stride -> (1, 1, 1), each with BatchNorm.

    The Weight Alteration slot alters the input of the residual branch (an identity in vanilla SlowFast; per-branch
    depthwise 1x1x1 convolutions in SlowFast-FFN, folded into conv_a's weights:
    ``conv_a(x + wa(x)) == conv_a with its input channels scaled by 1 + w``, the same map without a pass over the
    activation). The shortcut reads the unaltered input.
    """

    FOLDS_WEIGHT_ALTERATION = True  # engine.cost counts the unfolded form separately

    def __init__(self, in_channels: int, inner: int, out_channels: int, temporal_kernel: int, stride: int) -> None:
        super().__init__()
        self.wa = WeightAlterationSlot(in_channels, dims=3)
        self.conv_a = nn.Conv3d(in_channels, inner, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0),
                                bias=False)
        self.bn_a = nn.BatchNorm3d(inner)
        self.conv_b = nn.Conv3d(inner, inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn_b = nn.BatchNorm3d(inner)
        self.conv_c = nn.Conv3d(inner, out_channels, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels)
        self.shortcut_conv = None
        self.shortcut_bn = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut_conv = nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False)
            self.shortcut_bn = nn.BatchNorm3d(out_channels)

    def _conv_a_after_wa(self, features: torch.Tensor) -> torch.Tensor:
        """conv_a(x + wa(x)), with the per-channel factors 1 + w folded into conv_a's weight."""
        scale = self.wa.channel_scale()
        if scale is None:
            return self.conv_a(features)
        weight = self.conv_a.weight * scale.to(self.conv_a.weight.dtype).view(1, -1, 1, 1, 1)
        return nn.functional.conv3d(features, weight, None, self.conv_a.stride, self.conv_a.padding)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The block on (N, C, T, H, W) features."""
        residual = nn.functional.relu(self.bn_a(self._conv_a_after_wa(features)), inplace=True)
        residual = nn.functional.relu(self.bn_b(self.conv_b(residual)), inplace=True)
        residual = self.bn_c(self.conv_c(residual))
        identity = features
        if self.shortcut_conv is not None:
            identity = self.shortcut_bn(self.shortcut_conv(features))
        return nn.functional.relu(residual + identity, inplace=True)


class SlowFast(VideoModel):
    """SlowFast (vanilla) or SlowFast-FFN, taking videos (N, T, 3, H, W) (T Fast frames) and returning logits.

    Parameters
    ----------
    arch : str
        A key of ``ARCH_SPECS``.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int or None
        The trained (Fast) frame counts of SlowFast-FFN, one branch each, e.g. (16, 32, 64); None for vanilla.
    dropout : float
        Dropout before the classifier.
    private_norms : bool
        FFN: a BatchNorm set per branch (True) or one shared set (ablation).
    weight_alteration : bool
        FFN: per-branch Weight Alteration (True) or none (ablation).
    wa_init : str
        "as-run" (kaiming fan_out, what the official code ran) or "paper" (N(0, 1e-3)).
    slow_mode : str
        "per-clip": the Slow pathway of every call is `slow_frame_index` of its own Fast frames. "official": in a
        multi-frame-count call (`forward_by_frames`) each count's Slow frames are those of the official FFN training
        (`official_training_slow_index`); single calls are per-clip, as the official evaluation.
    """

    OFFICIAL_KEY_RULES = OFFICIAL_SLOWFAST_KEY_RULES

    def __init__(self, arch: str, num_classes: int, trained_frames: tuple[int, ...] | None, dropout: float,
                 private_norms: bool, weight_alteration: bool, wa_init: str, slow_mode: str) -> None:
        super().__init__()
        spec = ARCH_SPECS[arch]
        self.arch = arch
        self.spec = spec
        self.trained_frames = tuple(sorted(trained_frames)) if trained_frames else None
        self.slow_mode = slow_mode
        self.input_spec = InputSpec(mean=SLOWFAST_MEAN, std=SLOWFAST_STD, channel_order=SLOWFAST_CHANNEL_ORDER,
                                    frames_multiple=spec.alpha, min_frames=spec.alpha)
        self.slow_stem = Stem(spec.slow_stem_channels, spec.slow_temporal_kernels[0])
        self.fast_stem = Stem(spec.fast_stem_channels, spec.fast_temporal_kernels[0])
        self._build_stages(spec)
        slow_out, fast_out = spec.stage_widths("slow")[-1][1], spec.stage_widths("fast")[-1][1]
        self.feature_dim = slow_out + fast_out
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        if self.trained_frames:
            for frames in self.trained_frames:
                self.input_spec.check_frames(frames)
            convert_to_ffn(self, self.trained_frames, private_norms, weight_alteration)
        self._init_weights(wa_init)

    @property
    def classifier(self) -> nn.Linear:
        """The shared classifier."""
        return self.fc

    def _build_stages(self, spec: SlowFastSpec) -> None:
        """res2..res5 of both pathways and the four lateral connections (after the stem, res2, res3 and res4)."""
        slow_in, fast_in = spec.slow_stem_channels, spec.fast_stem_channels
        slow_widths, fast_widths = spec.stage_widths("slow"), spec.stage_widths("fast")
        for stage, name in enumerate(STAGE_NAMES):
            # The lateral connection before this stage appends 2 x Fast channels to the Slow features.
            fusion = LateralFusion(fast_in, spec.fusion_ratio, spec.fusion_kernel, spec.alpha)
            setattr(self, FUSION_NAMES[stage], fusion)
            slow_in += spec.fusion_ratio * fast_in
            kernels = (spec.slow_temporal_kernels[stage + 1], spec.fast_temporal_kernels[stage + 1])
            blocks, stride = spec.blocks[stage], spec.stage_strides[stage]
            setattr(self, f"slow_{name}", self._stage(slow_in, *slow_widths[stage], kernels[0], blocks, stride))
            setattr(self, f"fast_{name}", self._stage(fast_in, *fast_widths[stage], kernels[1], blocks, stride))
            slow_in, fast_in = slow_widths[stage][1], fast_widths[stage][1]

    @staticmethod
    def _stage(in_channels: int, inner: int, out_channels: int, temporal_kernel: int, blocks: int,
               stride: int) -> nn.ModuleList:
        """One stage of one pathway: `blocks` bottlenecks, the first with the stride and the width change."""
        return nn.ModuleList(
            Bottleneck3d(in_channels if index == 0 else out_channels, inner, out_channels, temporal_kernel,
                         stride if index == 0 else 1)
            for index in range(blocks)
        )

    def _init_weights(self, wa_init: str) -> None:
        """PySlowFast's init: every Conv3d kaiming fan_out (Weight Alteration included, as the official code ran),
        BatchNorm 1 / 0 except the last BatchNorm of every block (0), head N(0, 0.01) / 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.modules():
            if isinstance(block, Bottleneck3d):
                norms = block.bn_c.norms.values() if isinstance(block.bn_c, BranchNorm) else [block.bn_c]
                for norm in norms:
                    nn.init.zeros_(norm.weight)
        if wa_init == "paper":
            for alteration in weight_alteration_modules(self):
                for conv in alteration.convs.values():
                    nn.init.normal_(conv.weight, 0.0, PAPER_WA_STD)
        nn.init.normal_(self.fc.weight, 0.0, HEAD_INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def slow_index(self, frames: int) -> torch.Tensor:
        """The Fast frames the Slow pathway takes at `frames` frames (see ``slow_mode``)."""
        official = _TRAINING_SLOW_INDEX.get()
        if official is not None:
            return official[frames]
        return slow_frame_index(frames, self.spec.alpha)

    def forward_by_frames(self, videos_by_frames: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Logits per frame count, each through its own branch; ``slow_mode="official"`` takes the Slow frames of
        the official FFN training (`official_training_slow_index` of the call's frame counts)."""
        if self.slow_mode != "official" or not videos_by_frames:
            return super().forward_by_frames(videos_by_frames)
        token = _TRAINING_SLOW_INDEX.set(official_training_slow_index(list(videos_by_frames), self.spec.alpha))
        try:
            return super().forward_by_frames(videos_by_frames)
        finally:
            _TRAINING_SLOW_INDEX.reset(token)

    def forward_branch(self, videos: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Logits (N, classes) of videos (N, T, 3, H, W) with the branch in scope."""
        fast = videos.transpose(1, 2).contiguous()
        slow = fast.index_select(2, self.slow_index(videos.shape[1]).to(fast.device))
        return self.pathway_logits(slow, fast)

    def pathway_logits(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of the Slow and Fast clips (N, 3, T / alpha, H, W) and (N, 3, T, H, W)."""
        slow, fast = self.slow_stem(slow), self.fast_stem(fast)
        slow = self.fuse_stem(slow, fast)
        for stage, name in enumerate(STAGE_NAMES):
            for block in getattr(self, f"slow_{name}"):
                slow = block(slow)
            for block in getattr(self, f"fast_{name}"):
                fast = block(fast)
            if stage + 1 < len(FUSION_NAMES):
                slow = getattr(self, FUSION_NAMES[stage + 1])(slow, fast)
        pooled = torch.cat([slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))], dim=1)
        return self.fc(self.dropout(pooled))

    def load_pretrained(self, source: str) -> BackboneLoad:
        """Initialise from a PySlowFast SlowFast file (e.g. Kinetics-400 SLOWFAST_8x8_R50): a PyTorch checkpoint
        (``{"model_state": ...}``, a bare state dict, or one of FFN-pytorch) or a caffe2 ``.pkl``."""
        return load_pretrained_slowfast(self, source)


# ----------------------------------------------------------------------------------------------------------------
# Pretrained weights and official files


def read_caffe2_blobs(path: str | os.PathLike) -> dict[str, Any]:
    """The ``blobs`` of a caffe2 checkpoint (.pkl: a pickle of {"blobs": {name: numpy array}}), unpickled safely.

    Only numpy arrays, dtypes and plain containers are rebuilt; anything else in the file is refused.

    Raises
    ------
    ValueError
        One line naming the file, when it is not such a pickle.
    """
    with open(path, "rb") as handle:
        try:
            loaded = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{path} is not a caffe2 checkpoint (a pickle of numpy blobs): "
                             f"{type(error).__name__}: {error}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("blobs"), dict):
        raise ValueError(f"{path} holds no caffe2 \"blobs\" dict; pass a PySlowFast .pkl or a PyTorch checkpoint")
    return loaded["blobs"]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and nothing else that could run code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle
    }

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the allowed numpy and container names."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            import numpy

            core = getattr(numpy, "_core", None)
            if core is not None:
                module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


CAFFE2_NORM_LEAVES = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_CAFFE2_NORM = r"_bn_(s|b|rm|riv)$"


def _pathway(match: re.Match[str]) -> int:
    """0 (Slow) or 1 (Fast, the "t_" prefix) from a caffe2 blob match whose first group is the prefix."""
    return int(bool(match[1]))


# caffe2 blob -> PySlowFast name (PySlowFast's slowfast/utils/c2_model_loading.py gives the same correspondence).
CAFFE2_NAME_RULES = compile_rules((
    (r"^t_pool1_subsample_w$", lambda m: "s1_fuse.conv_f2s.weight"),
    (r"^t_pool1_subsample" + _CAFFE2_NORM, lambda m: f"s1_fuse.bn.{CAFFE2_NORM_LEAVES[m[1]]}"),
    (r"^t_res(\d)_\d+_branch2c_bn_subsample_w$", lambda m: f"s{m[1]}_fuse.conv_f2s.weight"),
    (r"^t_res(\d)_\d+_branch2c_bn_subsample" + _CAFFE2_NORM,
     lambda m: f"s{m[1]}_fuse.bn.{CAFFE2_NORM_LEAVES[m[2]]}"),
    (r"^(t_)?conv1_w$", lambda m: f"s1.pathway{_pathway(m)}_stem.conv.weight"),
    (r"^(t_)?res_conv1" + _CAFFE2_NORM, lambda m: f"s1.pathway{_pathway(m)}_stem.bn.{CAFFE2_NORM_LEAVES[m[2]]}"),
    (r"^(t_)?res(\d)_(\d+)_branch1_w$", lambda m: f"s{m[2]}.pathway{_pathway(m)}_res{m[3]}.branch1.weight"),
    (r"^(t_)?res(\d)_(\d+)_branch1" + _CAFFE2_NORM,
     lambda m: f"s{m[2]}.pathway{_pathway(m)}_res{m[3]}.branch1_bn.{CAFFE2_NORM_LEAVES[m[4]]}"),
    (r"^(t_)?res(\d)_(\d+)_branch2([abc])_w$",
     lambda m: f"s{m[2]}.pathway{_pathway(m)}_res{m[3]}.branch2.{m[4]}.weight"),
    (r"^(t_)?res(\d)_(\d+)_branch2([abc])" + _CAFFE2_NORM,
     lambda m: f"s{m[2]}.pathway{_pathway(m)}_res{m[3]}.branch2.{m[4]}_bn.{CAFFE2_NORM_LEAVES[m[5]]}"),
    (r"^pred_([wb])$", lambda m: f"head.projection.{'weight' if m[1] == 'w' else 'bias'}"),
))


def caffe2_to_pyslowfast_name(blob: str) -> str | None:
    """The PySlowFast name of a caffe2 SlowFast blob, or None for blobs with no weight (momentum, iteration, ...).

    caffe2 names: a "t_" prefix marks the Fast pathway; "conv1_w" / "res_conv1_bn_*" the stem;
    "res<S>_<i>_branch2<a|b|c>_w" and "..._branch2<a|b|c>_bn_*" the block convolutions and their BatchNorms;
    "res<S>_<i>_branch1_w" / "_bn_*" the shortcut; "t_pool1_subsample_*" and "t_res<S>_<i>_branch2c_bn_subsample_*"
    the lateral connections after the stem and after stage S; "pred_w" / "pred_b" the classifier. BatchNorm leaves:
    s (scale), b, rm, riv.
    """
    for pattern, name in CAFFE2_NAME_RULES:
        match = pattern.match(blob)
        if match:
            return name(match)
    return None


def caffe2_state_dict(blobs: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(PySlowFast-named state dict, caffe2 blobs without a weight) of a caffe2 SlowFast checkpoint's blobs."""
    state_dict, skipped = {}, []
    for blob, value in blobs.items():
        name = caffe2_to_pyslowfast_name(blob)
        if name is None:
            skipped.append(blob)
        else:
            state_dict[name] = torch.as_tensor(value).clone().float()
    return state_dict, skipped


def read_pretrained_state_dict(source: str) -> dict[str, torch.Tensor]:
    """A SlowFast state dict in PySlowFast names from a caffe2 .pkl or a PyTorch checkpoint file.

    PyTorch files: PySlowFast's ``{"model_state": ...}``, a ``{"state_dict": ...}`` checkpoint or a bare state dict.
    """
    if str(source).endswith(CAFFE2_SUFFIX):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"pretrained file {source} does not exist; pass the path of SLOWFAST_8x8_R50.pkl "
                                    "or a .pyth checkpoint")
        return caffe2_state_dict(read_caffe2_blobs(source))[0]
    return dict(unwrap_state_dict(load_checkpoint_file(source)))


def load_pretrained_slowfast(model: SlowFast, source: str) -> BackboneLoad:
    """Initialise ``model`` from a pretrained SlowFast; every private BatchNorm copy gets the same values.

    The pretraining classifier (``head.*``) is dropped; the new classifier and FFN's Weight Alteration keep their
    init (as in the official runs, whose Kinetics file has no Weight Alteration).

    Raises
    ------
    ValueError
        If the file's backbone does not fit the model (counts and first keys of the mismatch).
    """
    state_dict = read_pretrained_state_dict(source)
    translated, missing, unexpected = map_state_dict(model, state_dict, expand_shared_norms=True,
                                                     skip_prefixes=PRETRAINED_HEAD_PREFIXES)
    not_initialised = [key for key in missing if not any(part in key for part in NOT_IN_PRETRAINED)]
    if not_initialised or unexpected:
        raise ValueError(
            f"pretrained SlowFast weights in {source} do not fit arch={model.arch!r}: {len(not_initialised)} model "
            f"keys missing (e.g. {not_initialised[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            "pass a PySlowFast SlowFast R50 file with alpha 4 and lateral kernel 7 (e.g. SLOWFAST_8x8_R50)"
        )
    model.load_state_dict(translated, strict=False)
    dropped = [key for key in state_dict if bare_official_key(model, key).startswith(PRETRAINED_HEAD_PREFIXES)]
    return BackboneLoad(source=str(source), loaded=sorted(translated), dropped=dropped, left_at_init=missing)


def is_official_slowfast_state_dict(checkpoint: Mapping[str, Any]) -> tuple[int, ...] | None | bool:
    """Recognise an official SlowFast / SlowFast-FFN file (PySlowFast or FFN-pytorch 3D_Network) by its key names.

    Parameters
    ----------
    checkpoint : mapping
        A state dict, or a checkpoint holding one under "model_state" (PySlowFast) or "state_dict"; keys with or
        without "module.".

    Returns
    -------
    tuple of int, None or False
        The trained (Fast) frame counts of an FFN file, e.g. (16, 32, 64) from the official suffixes _4/_8/_16
        (Slow frames, alpha 4); None for a vanilla SlowFast file; False when it is not an official SlowFast file.
        The class count is the number of rows of "head.projection.weight"; the arch is "slowfast_r50".
    """
    checkpoint = unwrap_state_dict(checkpoint)
    keys = {strip_prefix(str(key), DATA_PARALLEL_PREFIX) for key in checkpoint}
    if not all(marker in keys for marker in OFFICIAL_MARKER_KEYS):
        return False
    suffixes = sorted(int(match[1]) for key in keys if (match := OFFICIAL_PRIVATE_NORM.match(key)))
    if not suffixes:
        return None
    return tuple(slow * OFFICIAL_ALPHA for slow in suffixes)


_EXPORT_RULES: KeyRules = compile_rules(
    pair
    for index, pathway in enumerate(PATHWAYS)
    for pair in (
        (rf"^{pathway}_stem\.conv\.weight$", f"s1.pathway{index}_stem.conv.weight"),
        (rf"^{pathway}_stem\.bn\.(\w+)$", rf"s1.pathway{index}_stem.bn.\1"),
        (rf"^{pathway}_res([2-5])\.(\d+)\.shortcut_conv\.weight$", rf"s\1.pathway{index}_res\2.branch1.weight"),
        (rf"^{pathway}_res([2-5])\.(\d+)\.shortcut_bn\.(\w+)$", rf"s\1.pathway{index}_res\2.branch1_bn.\3"),
        (rf"^{pathway}_res([2-5])\.(\d+)\.conv_([abc])\.weight$", rf"s\1.pathway{index}_res\2.branch2.\3.weight"),
        (rf"^{pathway}_res([2-5])\.(\d+)\.bn_([abc])\.(\w+)$", rf"s\1.pathway{index}_res\2.branch2.\3_bn.\4"),
        (rf"^{pathway}_res([2-5])\.(\d+)\.wa\.(\w+)$", rf"s\1.pathway{index}_res\2.branch2.adaconv.\3"),
    )
) + compile_rules((
    (r"^fuse_stem\.conv\.weight$", "s1_fuse.conv_f2s.weight"),
    (r"^fuse_stem\.bn\.(\w+)$", r"s1_fuse.bn.\1"),
    (r"^fuse_res([2-4])\.conv\.weight$", r"s\1_fuse.conv_f2s.weight"),
    (r"^fuse_res([2-4])\.bn\.(\w+)$", r"s\1_fuse.bn.\2"),
    (r"^fc\.(weight|bias)$", r"head.projection.\1"),
))
PRIVATE_COPY = re.compile(r"^(.*)\.(norms|convs)\.(\d+)\.(\w+)$")


def official_slowfast_key(key: str, alpha: int = OFFICIAL_ALPHA) -> str:
    """The PySlowFast / FFN-pytorch name of one of our SlowFast keys (the inverse of the official key rules).

    A private copy of the branch trained at T frames gets the official suffix _{T / alpha}
    (``slow_stem.bn.norms.16.weight`` -> ``s1.pathway0_stem.bn_4.weight``; ``...wa.convs.16.weight`` ->
    ``...branch2.adaconv_4.weight``).
    """
    copy = PRIVATE_COPY.match(key)
    plain = f"{copy[1]}.{copy[4]}" if copy else key
    for pattern, replacement in _EXPORT_RULES:
        if pattern.match(plain):
            name = pattern.sub(replacement, plain)
            break
    else:
        raise ValueError(f"official_slowfast_key: {key} is not a SlowFast key")
    if copy:
        head, leaf = name.rsplit(".", 1)
        name = f"{head}_{int(copy[3]) // alpha}.{leaf}"
    return name


def to_official_slowfast_state_dict(model: SlowFast) -> dict[str, torch.Tensor]:
    """The state dict of a SlowFast (PySlowFast names) or SlowFast-FFN (FFN-pytorch names) model.

    A file holding it loads into the official code, and back through `load_pretrained` or
    ``load_official_state_dict``.
    """
    return {official_slowfast_key(key, model.spec.alpha): value.detach().clone()
            for key, value in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------------------------
# Registry entry points


def build_slowfast(
    arch: str,
    num_classes: int,
    trained_frames: tuple[int, ...] | None = None,
    *,
    dropout: float = DEFAULT_DROPOUT,
    private_norms: bool = True,
    weight_alteration: bool = True,
    wa_init: str = "as-run",
    slow_mode: str = "per-clip",
) -> SlowFast:
    """Build SlowFast (``trained_frames=None``) or SlowFast-FFN (``trained_frames=(16, 32, 64)``).

    The registry's entry points ("slowfast_r50", "slowfast_tiny") call this with their ``arch``; use
    ``model.build_model(arch, ...)``.

    Parameters
    ----------
    arch : str
        A key of ARCH_SPECS.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int, optional
        Trained (Fast) frame counts of SlowFast-FFN, multiples of alpha; None builds vanilla SlowFast.
    dropout : float
        Dropout before the classifier (0.5).
    private_norms : bool
        FFN: private BatchNorms per frame count (False: one shared set, an ablation).
    weight_alteration : bool
        FFN: Weight Alteration (False: none, an ablation).
    wa_init : str
        "as-run" (kaiming fan_out, as the official code ran) or "paper" (N(0, 1e-3)).
    slow_mode : str
        "per-clip" (default) or "official" (multi-frame-count calls take the Slow frames of the official FFN
        training loader; see `official_training_slow_index`).
    """
    check_choice("wa_init", wa_init, WA_INITS)
    check_choice("slow_mode", slow_mode, SLOW_MODES)
    return SlowFast(arch=arch, num_classes=num_classes, trained_frames=trained_frames, dropout=float(dropout),
                    private_norms=bool(private_norms), weight_alteration=bool(weight_alteration), wa_init=wa_init,
                    slow_mode=slow_mode)


for _arch in ARCH_SPECS:
    register_model(_arch, family=FAMILY)(functools.partial(build_slowfast, _arch))

# The official SlowFast-FFN run on Something-Something V1 (FFN-pytorch, 3D_Network:
# configs/sth/SLOWFAST_16x8_R50_FFN.yaml, exp/slowfast_sthv1_FFN/run.sh, PySlowFast's defaults): trained at 16 / 32 /
# 64 Fast frames; 4 GPUs x 4 videos (BatchNorm sees 4), SGD with Nesterov momentum 0.9, lr 0.03 at the total batch
# of 16, steps x0.1 at epoch 14 and x0.01 at 18 of 22, a linear warm-up over 0.19 epoch from 1e-4 (per iteration),
# weight decay 1e-6 on everything but BatchNorm, dropout 0.5, fp32, no clipping; the rounded frame sampling and the
# training Slow frames of its loader; short-side jitter 256-320 and a random 224 crop; test at short side 256, the
# left (or top) 256 crop.
OFFICIAL_WARMUP_START_LR = 1e-4
OFFICIAL_LR = 0.03
OFFICIAL_RECIPE = {
    "batch_size": 4, "total_batch": 16, "lr": OFFICIAL_LR, "lr_batch": 16, "optimizer": "sgd", "momentum": 0.9,
    "nesterov": True, "weight_decay": 1e-6, "param_groups": "no-decay-norms", "schedule": "step",
    "lr_steps": [14, 18], "lr_step_factors": [0.1, 0.01], "epochs": 22, "warmup_epochs": 0.19,
    "warmup_start": OFFICIAL_WARMUP_START_LR / OFFICIAL_LR, "dropout": 0.5, "clip_grad": None, "precision": "fp32",
    "val_precision": "fp32", "slow_mode": "official", "sampling": "rounded", "train_crop": "jitter",
    "jitter_range": [256, 320], "crop_size": 224, "test_resize": 256, "test_crop_size": 256,
    "test_crop_layout": "uniform", "test_crops": 1,
}
register_recipe(FAMILY, "official", OFFICIAL_RECIPE)
register_reference_run(FAMILY, "slowfast_r50", (16, 32, 64))

class SlowFastImageNetwork(nn.Module):
    """SlowFast on single images: both pathways read the one frame, so every temporal kernel (stems, blocks, lateral
    connections) works with its centre tap alone, the 2D network a 3D SlowFast is inflated from.

    Parameters
    ----------
    network : SlowFast
        A vanilla SlowFast; its weights are trained in place.
    """

    def __init__(self, network: SlowFast) -> None:
        super().__init__()
        self.network = network

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """Logits of one-frame videos (N, 1, 3, H, W)."""
        if videos.dim() != 5 or videos.shape[1] != 1:
            raise ValueError(f"the SlowFast image network takes one-frame videos (N, 1, 3, H, W), got shape "
                             f"{tuple(videos.shape)}")
        frame = videos.transpose(1, 2).contiguous()
        with branch_scope(None):
            return self.network.pathway_logits(frame, frame)


IMAGE_INFLATION = "mean"  # PySlowFast's inflation of ImageNet weights (I3D: each tap the 2D kernel / k)


def build_image_slowfast(arch: str, num_classes: int) -> SlowFastImageNetwork:
    """A vanilla SlowFast (dropout 0) reading single images through both pathways."""
    return SlowFastImageNetwork(build_slowfast(arch, num_classes, dropout=0.0))


def export_inflated_slowfast(image_network: SlowFastImageNetwork) -> dict[str, torch.Tensor]:
    """The trained image network as a pretrained SlowFast file's state dict (PySlowFast names), every temporal kernel
    inflated from its centre tap by IMAGE_INFLATION (the image network itself is left unchanged)."""
    network = copy.deepcopy(image_network.network)
    inflate_temporal_kernels(network, IMAGE_INFLATION)
    return to_official_slowfast_state_dict(network)


# PySlowFast starts 3D networks from ImageNet by inflating 2D kernels (I3D's mean rule); SlowFast here learns the
# images with its own network on one-frame clips, then inflates every temporal kernel the same way.
for _arch in ARCH_SPECS:
    register_image_pretraining(_arch, ImagePretraining(
        build=functools.partial(build_image_slowfast, _arch), export=export_inflated_slowfast,
        input_spec=InputSpec(mean=SLOWFAST_MEAN, std=SLOWFAST_STD, channel_order=SLOWFAST_CHANNEL_ORDER),
        recipe={"inflation": IMAGE_INFLATION}))


@register_official_reader(FAMILY)
def read_official_slowfast(checkpoint: Mapping[str, Any]) -> OfficialFile | None:
    """The arch, trained frame counts and class count of an official SlowFast file (None: not one)."""
    trained = is_official_slowfast_state_dict(checkpoint)
    if trained is False:
        return None
    state = without_data_parallel_prefix(checkpoint)
    return OfficialFile("slowfast_r50", trained, int(state["head.projection.weight"].shape[0]))
