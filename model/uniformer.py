"""The UniFormer family: UniFormer and UniFormer-FFN (registered as "uniformer_s" and "uniformer_tiny").

UniFormer (Li et al., "UniFormer: Unified Transformer for Efficient Spatiotemporal Representation Learning",
ICLR 2022) is a four-stage video network. Each stage starts with a patch embedding (a strided Conv3d and a
LayerNorm); stages 1 and 2 stack convolution blocks (local relation aggregation: BatchNorm, a 1x1x1 "value" conv,
a depthwise 5x5x5 "affinity" conv, a 1x1x1 "fusion" conv, then a BatchNorm and a 1x1x1-conv MLP), stages 3 and 4
stack self-attention blocks (LayerNorm, global multi-head self-attention over every T x H x W token, LayerNorm,
MLP). Every block first adds a depthwise 3x3x3 convolution of its input (the dynamic position embedding). A final
BatchNorm, the mean over tokens and a linear classifier give the logits. The first patch embedding also halves
T (kernel 3, stride 2, padding 1 in time: ceil(T / 2) frames), so any T >= 1 and any H, W >= 32 run.

UniFormer-FFN (FFN-pytorch by BeSpontaneous, Transformer_Network/slowfast/models/uniformer_FFN.py) is the same
network converted by ``model.ffn_parts.convert_to_ffn``: per trained frame count it keeps a private copy of every
norm (the BatchNorms of the convolution blocks and the final norm, the LayerNorms of the attention blocks and of
the patch embeddings) and a Weight Alteration (``x + wa(x)``, a depthwise 1x1x1 conv) on each block's input,
before the position embedding: it alters the whole residual stream. Convolutions, attention, MLPs and the
classifier are shared. ``OFFICIAL_UNIFORMER_KEY_RULES`` maps the official names onto ours.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from model.ffn_parts import WeightAlterationSlot, convert_to_ffn, weight_alteration_modules
from model.inflation import inflate_temporal_kernels
from model.interface import InputSpec, VideoModel
from model.official_checkpoints import (
    DATA_PARALLEL_PREFIX,
    KeyRules,
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

FAMILY = "uniformer"
# Input convention of the official UniFormer video models (RGB frames on the 0-1 scale, one mean and std for all
# three channels: DATA.MEAN 0.45 / DATA.STD 0.225 of the PySlowFast configs they run on).
UNIFORMER_MEAN = (0.45, 0.45, 0.45)
UNIFORMER_STD = (0.225, 0.225, 0.225)
# Four stride-2 spatial reductions after a stride-4 one: 32 px is the smallest frame that reaches stage 4.
MIN_SIZE = 32
STAGES = 4
CONV_STAGES = 2  # stages 1-2: convolution blocks; stages 3-4: self-attention blocks
FIRST_PATCH = dict(kernel_size=(3, 4, 4), stride=(2, 4, 4), padding=(1, 0, 0))
LATER_PATCH = dict(kernel_size=(1, 2, 2), stride=(1, 2, 2), padding=(0, 0, 0))
POSITION_KERNEL = 3
AFFINITY_KERNEL = 5
BLOCK_LAYER_NORM_EPS = 1e-6  # the attention blocks' LayerNorms; the patch embeddings keep PyTorch's 1e-5
LINEAR_INIT_STD = 0.02
WEIGHT_ALTERATION_INIT_STD = 1e-3
DROP_PATH_MODE = "row"  # one keep / drop draw per video
# Keys of a pretrained (Kinetics) state dict that are never loaded: its classifier.
PRETRAINED_HEAD_PREFIXES = ("head.",)
# Model keys a vanilla pretrained file cannot provide: the new classifier and FFN's Weight Alteration convs.
NEW_HEAD_PREFIX = "head."
WEIGHT_ALTERATION_PART = ".wa.convs."
# Keys under which PySlowFast-style and timm-style checkpoint files keep their state dict.


@dataclass(frozen=True)
class UniFormerSpec:
    """Layout of a UniFormer.

    Attributes
    ----------
    embed_dims : tuple of int
        Channels of the four stages.
    depths : tuple of int
        Blocks per stage (stages 1-2 convolution blocks, 3-4 self-attention blocks).
    head_dim : int
        Channels per attention head (heads = stage channels / head_dim).
    mlp_ratio : float
        MLP hidden channels / stage channels.
    qkv_bias : bool
        Bias on the query / key / value projection.
    """

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    head_dim: int
    mlp_ratio: float
    qkv_bias: bool


UNIFORMER_SPECS: dict[str, UniFormerSpec] = {
    # UniFormer-S (paper Table 1; the official video configs: EMBED_DIM, DEPTH, HEAD_DIM, MLP_RATIO, QKV_BIAS).
    "uniformer_s": UniFormerSpec((64, 128, 320, 512), (3, 4, 8, 3), 64, 4.0, True),
    # The CPU demo's network: one block per stage, narrow; runs 32 px frames.
    "uniformer_tiny": UniFormerSpec((16, 32, 64, 96), (1, 1, 1, 1), 32, 2.0, True),
}

# Official key (without "module.") -> ours. The FFN model suffixes every norm with its frame count (norm1_4,
# patch_embed1.norm_8, norm_16) and names Weight Alteration adaconv_<T>; the vanilla UniFormer (and the Kinetics
# checkpoints of the UniFormer repository) uses the plain names. The convolution blocks' conv1 / attn / conv2 are our
# value_conv / affinity_conv / fusion_conv.
OFFICIAL_UNIFORMER_KEY_RULES: KeyRules = compile_rules((
    (r"^(patch_embed\d)\.proj\.(weight|bias)$", r"\1.proj.\2"),
    (r"^(patch_embed\d)\.norm_(\d+)\.(weight|bias)$", r"\1.norm.norms.\2.\3"),
    (r"^(patch_embed\d)\.norm\.(weight|bias)$", r"\1.norm.\2"),
    (r"^(blocks\d\.\d+)\.adaconv_(\d+)\.weight$", r"\1.wa.convs.\2.weight"),
    (r"^(blocks\d\.\d+)\.(norm[12])_(\d+)\.(\w+)$", r"\1.\2.norms.\3.\4"),
    (r"^(blocks\d\.\d+)\.(norm[12])\.(\w+)$", r"\1.\2.\3"),
    (r"^(blocks[12]\.\d+)\.conv1\.(weight|bias)$", r"\1.value_conv.\2"),
    (r"^(blocks[12]\.\d+)\.attn\.(weight|bias)$", r"\1.affinity_conv.\2"),
    (r"^(blocks[12]\.\d+)\.conv2\.(weight|bias)$", r"\1.fusion_conv.\2"),
    (r"^(blocks\d\.\d+)\.(pos_embed|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", r"\1.\2.\3"),
    (r"^norm_(\d+)\.(\w+)$", r"norm.norms.\1.\2"),
    (r"^norm\.(\w+)$", r"norm.\1"),
    (r"^head\.(weight|bias)$", r"head.\1"),
))
_OFFICIAL_ADACONV = re.compile(r"^blocks1\.0\.adaconv_(\d+)\.weight$")


class PatchEmbed(nn.Module):
    """A strided Conv3d then a LayerNorm over channels, on (N, C, T, H, W) features.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels before and after.
    geometry : dict
        Conv3d kernel_size, stride and padding.
    """

    def __init__(self, in_channels: int, out_channels: int, geometry: dict[str, tuple[int, int, int]]) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, out_channels, **geometry)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, H, W) -> (N, C_out, T', H', W')."""
        embedded = self.proj(features)
        return self.norm(embedded.movedim(1, -1)).movedim(-1, 1).contiguous()


class ConvMlp(nn.Module):
    """Two 1x1x1 convolutions with GELU between them, on (N, C, T, H, W) features."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv3d(hidden, channels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """fc2(gelu(fc1(x)))."""
        return self.fc2(self.act(self.fc1(features)))


class TokenMlp(nn.Module):
    """Two linear layers with GELU between them, on (N, L, C) tokens."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """fc2(gelu(fc1(x)))."""
        return self.fc2(self.act(self.fc1(tokens)))


class MultiHeadSelfAttention(nn.Module):
    """Global multi-head self-attention over (N, L, C) tokens, scaled by 1/sqrt(head channels)."""

    def __init__(self, channels: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """proj(softmax(q k^T / sqrt(d)) v), heads concatenated."""
        num_videos, length, channels = tokens.shape
        qkv = self.qkv(tokens).view(num_videos, length, 3, self.heads, channels // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = nn.functional.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(num_videos, length, channels))


def _depthwise_conv(channels: int, kernel: int) -> nn.Conv3d:
    """A depthwise Conv3d (one filter per channel, with bias) keeping T, H and W."""
    return nn.Conv3d(channels, channels, kernel, padding=kernel // 2, groups=channels)


class ConvBlock(nn.Module):
    """UniFormer's convolution block (local relation aggregation) on (N, C, T, H, W) features.

    ``x = wa(x); x = x + pos_embed(x); x = x + fusion(affinity(value(norm1(x)))); x = x + mlp(norm2(x))``, the two
    residual branches under stochastic depth.
    """

    def __init__(self, channels: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.wa = WeightAlterationSlot(channels, dims=3)
        self.pos_embed = _depthwise_conv(channels, POSITION_KERNEL)
        self.norm1 = nn.BatchNorm3d(channels)
        self.value_conv = nn.Conv3d(channels, channels, kernel_size=1)
        self.affinity_conv = _depthwise_conv(channels, AFFINITY_KERNEL)
        self.fusion_conv = nn.Conv3d(channels, channels, kernel_size=1)
        self.norm2 = nn.BatchNorm3d(channels)
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path, DROP_PATH_MODE)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The block on (N, C, T, H, W) features."""
        features = self.wa(features)
        features = features + self.pos_embed(features)
        aggregated = self.fusion_conv(self.affinity_conv(self.value_conv(self.norm1(features))))
        features = features + self.drop_path(aggregated)
        return features + self.drop_path(self.mlp(self.norm2(features)))


class SelfAttentionBlock(nn.Module):
    """UniFormer's self-attention block (global relation aggregation) on (N, C, T, H, W) features.

    ``x = wa(x); x = x + pos_embed(x)``, then on the T*H*W tokens ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``,
    the two residual branches under stochastic depth.
    """

    def __init__(self, channels: int, heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float) -> None:
        super().__init__()
        self.wa = WeightAlterationSlot(channels, dims=3)
        self.pos_embed = _depthwise_conv(channels, POSITION_KERNEL)
        self.norm1 = nn.LayerNorm(channels, eps=BLOCK_LAYER_NORM_EPS)
        self.attn = MultiHeadSelfAttention(channels, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(channels, eps=BLOCK_LAYER_NORM_EPS)
        self.mlp = TokenMlp(channels, int(channels * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path, DROP_PATH_MODE)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The block on (N, C, T, H, W) features."""
        features = self.wa(features)
        features = features + self.pos_embed(features)
        shape = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens)))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.transpose(1, 2).reshape(shape)


class UniFormer(VideoModel):
    """UniFormer (vanilla) or UniFormer-FFN, taking videos (N, T, 3, H, W) and returning logits (N, classes).

    Parameters
    ----------
    spec : UniFormerSpec
        The layout.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int or None
        The trained frame counts of UniFormer-FFN (one branch each); None for vanilla UniFormer.
    drop_path_rate : float
        Stochastic depth of the last block; block i of n gets ``rate * i / (n - 1)`` (the first none).
    private_norms : bool
        FFN: a norm set per branch (True) or one shared set (ablation).
    weight_alteration : bool
        FFN: per-branch Weight Alteration (True) or none (ablation).
    """

    OFFICIAL_KEY_RULES = OFFICIAL_UNIFORMER_KEY_RULES

    def __init__(
        self,
        spec: UniFormerSpec,
        num_classes: int,
        trained_frames: tuple[int, ...] | None,
        drop_path_rate: float,
        private_norms: bool,
        weight_alteration: bool,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.trained_frames = tuple(sorted(trained_frames)) if trained_frames else None
        self.input_spec = InputSpec(mean=UNIFORMER_MEAN, std=UNIFORMER_STD, channel_order="RGB", min_size=MIN_SIZE)
        self._build_stages(spec, drop_path_rate)
        self.norm = nn.BatchNorm3d(spec.embed_dims[-1])
        self.head = nn.Linear(spec.embed_dims[-1], num_classes)
        if self.trained_frames:
            convert_to_ffn(self, self.trained_frames, private_norms, weight_alteration)
        self._init_weights()

    @property
    def classifier(self) -> nn.Linear:
        """The shared classifier."""
        return self.head

    def _build_stages(self, spec: UniFormerSpec, drop_path_rate: float) -> None:
        """patch_embed1-4 and blocks1-4, stochastic depth rising linearly from 0 over all blocks."""
        rates = torch.linspace(0.0, float(drop_path_rate), sum(spec.depths)).tolist()
        in_channels = 3
        for stage, (channels, depth) in enumerate(zip(spec.embed_dims, spec.depths)):
            geometry = FIRST_PATCH if stage == 0 else LATER_PATCH
            setattr(self, f"patch_embed{stage + 1}", PatchEmbed(in_channels, channels, geometry))
            stage_rates, rates = rates[:depth], rates[depth:]
            if stage < CONV_STAGES:
                blocks = [ConvBlock(channels, spec.mlp_ratio, rate) for rate in stage_rates]
            else:
                heads = channels // spec.head_dim
                blocks = [SelfAttentionBlock(channels, heads, spec.mlp_ratio, spec.qkv_bias, rate)
                          for rate in stage_rates]
            setattr(self, f"blocks{stage + 1}", nn.ModuleList(blocks))
            in_channels = channels

    def _init_weights(self) -> None:
        """What the official model runs: Linear truncated N(0, 0.02) / 0, LayerNorm 1 / 0, Weight Alteration N(0, 1e-3).

        Convolutions keep PyTorch's default initialisation and BatchNorm its 1 / 0, as in the official code.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=LINEAR_INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for alteration in weight_alteration_modules(self):
            for conv in alteration.convs.values():
                nn.init.normal_(conv.weight, 0.0, WEIGHT_ALTERATION_INIT_STD)

    def stages(self) -> list[tuple[PatchEmbed, nn.ModuleList]]:
        """(patch embedding, blocks) of each stage, in order."""
        return [(getattr(self, f"patch_embed{stage}"), getattr(self, f"blocks{stage}"))
                for stage in range(1, STAGES + 1)]

    def forward_branch(self, videos: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Logits (N, classes) of videos (N, T, 3, H, W) with the branch in scope."""
        self.input_spec.check_size(int(videos.shape[-2]), int(videos.shape[-1]))
        features = videos.transpose(1, 2).contiguous()  # (N, 3, T, H, W)
        for patch_embed, blocks in self.stages():
            features = patch_embed(features)
            for block in blocks:
                features = block(features)
        pooled = self.norm(features).flatten(2).mean(dim=-1)
        return self.head(pooled)

    def load_pretrained(self, source: str) -> BackboneLoad:
        """Initialise from a vanilla UniFormer state dict (e.g. the Kinetics-600 uniformer_small_k600_16x4 file).

        Every private norm copy of an FFN gets the same pretrained norm; the file's classifier is dropped; the new
        classifier and the Weight Alteration convs keep their initial values.

        Parameters
        ----------
        source : str
            Path of a state dict in the official UniFormer names, bare or under "model", "model_state" or
            "state_dict", with or without the "module." prefix.
        """
        state_dict = unwrap_state_dict(load_checkpoint_file(source))
        translated, missing, unexpected = map_state_dict(self, state_dict, expand_shared_norms=True,
                                                         skip_prefixes=PRETRAINED_HEAD_PREFIXES)
        not_initialised = [key for key in missing if not _left_at_init_by_design(key)]
        if not_initialised or unexpected:
            raise ValueError(
                f"pretrained file {source} does not fit this UniFormer: {len(not_initialised)} model keys missing "
                f"(e.g. {not_initialised[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); pass a state "
                "dict of the same UniFormer size in the official names (e.g. uniformer_small_k600_16x4.pth for "
                "uniformer_s)"
            )
        self.load_state_dict(translated, strict=False)
        dropped = [key for key in state_dict
                   if strip_prefix(key, DATA_PARALLEL_PREFIX).startswith(PRETRAINED_HEAD_PREFIXES)]
        return BackboneLoad(source=str(source), loaded=sorted(translated), dropped=dropped, left_at_init=missing)


def _left_at_init_by_design(key: str) -> bool:
    """True for the model keys a vanilla pretrained file cannot provide (the new classifier, Weight Alteration)."""
    return key.startswith(NEW_HEAD_PREFIX) or WEIGHT_ALTERATION_PART in key


def is_official_uniformer_state_dict(state_dict: Mapping[str, Any]) -> tuple[int, ...] | None | bool:
    """Recognise an official UniFormer state dict by its key names.

    Parameters
    ----------
    state_dict : mapping
        A state dict (or a checkpoint dict holding one, see `unwrap_state_dict`), with or without "module.".

    Returns
    -------
    tuple of int, None or False
        The trained frame counts of an official UniFormer-FFN (from its ``adaconv_<T>`` names, e.g. (4, 8, 16)),
        None for a vanilla UniFormer (the FFN repository's baseline or a UniFormer repository file), False when
        the keys are not a UniFormer's.
    """
    keys = {strip_prefix(key, DATA_PARALLEL_PREFIX) for key in unwrap_state_dict(state_dict)}
    if not {"patch_embed1.proj.weight", "blocks1.0.pos_embed.weight", "head.weight"} <= keys:
        return False
    frames = sorted(int(match.group(1)) for key in keys if (match := _OFFICIAL_ADACONV.match(key)))
    if frames:
        return tuple(frames)
    return None if "blocks1.0.norm1.weight" in keys else False


def official_uniformer_arch(state_dict: Mapping[str, Any]) -> str | None:
    """The registered name whose layout (stage channels and depths) an official UniFormer state dict has, or None."""
    state_dict = {strip_prefix(key, DATA_PARALLEL_PREFIX): value
                  for key, value in unwrap_state_dict(state_dict).items()}
    for name, spec in UNIFORMER_SPECS.items():
        widths_match = all(
            tuple(getattr(state_dict.get(f"patch_embed{stage + 1}.proj.weight"), "shape", ()))[:1] == (channels,)
            for stage, channels in enumerate(spec.embed_dims)
        )
        depths_match = all(
            f"blocks{stage + 1}.{depth - 1}.pos_embed.weight" in state_dict
            and f"blocks{stage + 1}.{depth}.pos_embed.weight" not in state_dict
            for stage, depth in enumerate(spec.depths)
        )
        if widths_match and depths_match:
            return name
    return None


def build_uniformer(
    arch: str,
    num_classes: int,
    trained_frames: tuple[int, ...] | None = None,
    *,
    drop_path_rate: float = 0.0,
    private_norms: bool = True,
    weight_alteration: bool = True,
) -> UniFormer:
    """Build a UniFormer (``trained_frames=None``) or a UniFormer-FFN (``trained_frames=(4, 8, 16)``).

    The registry's entry points ("uniformer_s", "uniformer_tiny") call this with their ``arch``; use
    ``model.build_model(arch, ...)``.

    Parameters
    ----------
    arch : str
        A key of UNIFORMER_SPECS.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int, optional
        Trained frame counts of UniFormer-FFN; None builds vanilla UniFormer.
    drop_path_rate : float
        Stochastic depth rate of the last block, rising linearly from 0 over all blocks (0.0; the official
        Something-Something recipe uses 0.2).
    private_norms : bool
        FFN: private norms per frame count (False: one shared set, an ablation).
    weight_alteration : bool
        FFN: Weight Alteration convs (False: none, an ablation).
    """
    if not 0.0 <= float(drop_path_rate) < 1.0:
        raise ValueError(f"drop_path_rate={drop_path_rate} must be in [0, 1)")
    return UniFormer(UNIFORMER_SPECS[arch], num_classes=num_classes, trained_frames=trained_frames,
                     drop_path_rate=float(drop_path_rate), private_norms=bool(private_norms),
                     weight_alteration=bool(weight_alteration))


for _arch in UNIFORMER_SPECS:
    register_model(_arch, family=FAMILY)(functools.partial(build_uniformer, _arch))

# The official UniFormer-S FFN run on Something-Something V1 (FFN-pytorch, Transformer_Network:
# exp/uniformer_s16_sthv1_prek600_FFN/config.yaml with run.sh and test.sh, tools/train_net_FFN.py, PySlowFast's
# optimizer and lr policy): 4 GPUs x 8 videos, each in two augmented copies; AdamW (0.9, 0.999, eps 1e-8), lr 2e-4 at
# the total batch of 32, 5 warm-up epochs from 1e-6 then cosine to 1e-6 over 60 epochs (per iteration), weight decay
# 0.05 on parameters with more than one dimension, drop path 0.2, clipping at 20, fp16 AMP with fp32 validation,
# mixup 0.8 / cutmix 1.0 with label smoothing 0.1, RandAugment rand-m7-n4-mstd0.5-inc1, random erasing 0.25, random
# resized crop 224, the rounded frame sampling; test 1 clip x 3 crops at short side 224; validation every 5 epochs.
OFFICIAL_LR = 2e-4
OFFICIAL_END_LR = 1e-6
OFFICIAL_RECIPE = {
    "batch_size": 8, "total_batch": 32, "train_views": 2, "lr": OFFICIAL_LR, "lr_batch": 32, "optimizer": "adamw",
    "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05, "param_groups": "no-decay-1d", "schedule": "cosine",
    "epochs": 60, "warmup_epochs": 5.0, "warmup_start": OFFICIAL_END_LR / OFFICIAL_LR,
    "lr_floor": OFFICIAL_END_LR / OFFICIAL_LR, "drop_path_rate": 0.2, "clip_grad": 20.0, "precision": "fp16",
    "val_precision": "fp32", "mixup": 0.8, "cutmix": 1.0, "mixup_switch_prob": 0.5, "label_smoothing": 0.1,
    "rand_augment": "rand-m7-n4-mstd0.5-inc1", "random_erasing": 0.25, "train_crop": "random-resized",
    "crop_size": 224, "sampling": "rounded", "test_resize": 224, "test_crop_size": 224, "test_crop_layout": "uniform",
    "test_crops": 3, "val_every": 5,
}
register_recipe(FAMILY, "official", OFFICIAL_RECIPE)
register_reference_run(FAMILY, "uniformer_s", (4, 8, 16))

# Our names of a vanilla UniFormer -> the official ones (the inverse of the key rules; other names are the same).
EXPORT_RULES: KeyRules = compile_rules((
    (r"^(blocks[12]\.\d+)\.value_conv\.(weight|bias)$", r"\1.conv1.\2"),
    (r"^(blocks[12]\.\d+)\.affinity_conv\.(weight|bias)$", r"\1.attn.\2"),
    (r"^(blocks[12]\.\d+)\.fusion_conv\.(weight|bias)$", r"\1.conv2.\2"),
))


def to_official_uniformer_state_dict(model: UniFormer) -> dict[str, torch.Tensor]:
    """The state dict of a vanilla UniFormer in the official names (what `UniFormer.load_pretrained` reads).

    Raises
    ------
    ValueError
        For a UniFormer-FFN (export a vanilla model).
    """
    exported = {}
    for key, value in model.state_dict().items():
        if ".norms." in key or WEIGHT_ALTERATION_PART in key:
            raise ValueError(f"to_official_uniformer_state_dict: {key} belongs to an FFN; export a vanilla model")
        for pattern, replacement in EXPORT_RULES:
            if pattern.match(key):
                key = pattern.sub(replacement, key)
                break
        exported[key] = value.detach().clone()
    return exported


# The UniFormer video code starts from ImageNet UniFormer weights, inflating each 2D kernel to every temporal tap
# divided by the kernel size (its inflate_weight with the default center=False). Here UniFormer learns the images
# with its own network on one-frame clips (every temporal tap but the centre one meets zero padding there).
IMAGE_INFLATION = "mean"


def build_image_uniformer(arch: str, num_classes: int) -> UniFormer:
    """A vanilla UniFormer for single-image pretraining (one-frame clips; no stochastic depth)."""
    return build_uniformer(arch, num_classes)


def export_inflated_uniformer(network: UniFormer) -> dict[str, torch.Tensor]:
    """The trained network in the official names, every temporal kernel inflated from its centre tap (the network
    itself is left unchanged)."""
    inflated = copy.deepcopy(network)
    inflate_temporal_kernels(inflated, IMAGE_INFLATION)
    return to_official_uniformer_state_dict(inflated)


for _arch in UNIFORMER_SPECS:
    register_image_pretraining(_arch, ImagePretraining(
        build=functools.partial(build_image_uniformer, _arch), export=export_inflated_uniformer,
        input_spec=InputSpec(mean=UNIFORMER_MEAN, std=UNIFORMER_STD, channel_order="RGB"),
        recipe={"inflation": IMAGE_INFLATION}))


@register_official_reader(FAMILY)
def read_official_uniformer(checkpoint: Mapping[str, Any]) -> OfficialFile | None:
    """The arch, trained frame counts and class count of an official UniFormer file (None: not one)."""
    trained = is_official_uniformer_state_dict(checkpoint)
    arch = official_uniformer_arch(checkpoint) if trained is not False else None
    if arch is None:
        return None
    state = without_data_parallel_prefix(checkpoint)
    return OfficialFile(arch, trained, int(state["head.weight"].shape[0]))
