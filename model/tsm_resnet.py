"""The TSM family: TSM-ResNet and TSM-FFN (registered as "resnet18", "resnet34", "resnet50", "resnet101", "tiny").

Vanilla TSM is a ResNet whose blocks shift part of the channels along time. TSM-FFN (Frame Flexible Network) is the
same network converted by ``model.ffn_parts.convert_to_ffn``: every convolution and the classifier stay shared,
and per trained frame count ("branch") it keeps a private copy of every BatchNorm (stem, every block, every
downsample) and a depthwise 1x1 Weight Alteration conv per block, applied as a residual after the shift and before
conv1. Module names are ours; ``OFFICIAL_TSM_KEY_RULES`` maps the official names onto them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.ffn_parts import WeightAlterationSlot, convert_to_ffn, weight_alteration_modules
from model.interface import InputSpec, VideoModel, check_choice
from model.official_checkpoints import KeyRules, compile_rules, strip_prefix, without_data_parallel_prefix
from model.pretrained import IMAGENET, TORCHVISION_V1_WEIGHTS, BackboneLoad, load_imagenet_weights
from model.registry import (
    ImagePretraining,
    OfficialFile,
    build_model,
    register_image_pretraining,
    register_model,
    register_official_reader,
    register_recipe,
    register_reference_run,
)
from model.temporal_shift import DEFAULT_FOLD_DIV, SHIFT_IMPLEMENTATIONS

FAMILY = "tsm"
OFFICIAL_TSM_PREFIX = "base_model."
DEFAULT_DROPOUT = 0.5
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



# Official key (without "module." and "base_model.") -> ours. FFN-pytorch's TSM-FFN suffixes every BatchNorm with
# its frame count (bn1_4) and names Weight Alteration adaconv_<T>; its TSM baseline and torchvision use plain names
# (downsample.0 / downsample.1); mit-han-lab's TSM wraps conv1 of each block (conv1.net).
OFFICIAL_TSM_KEY_RULES: KeyRules = compile_rules((
    (r"^new_fc\.(weight|bias)$", r"fc.\1"),
    (r"^conv1\.weight$", r"conv1.weight"),
    (r"^bn1_(\d+)\.(\w+)$", r"bn1.norms.\1.\2"),
    (r"^bn1\.(\w+)$", r"bn1.\1"),
    (r"^(layer\d+\.\d+)\.conv1\.net\.weight$", r"\1.conv1.weight"),
    (r"^(layer\d+\.\d+)\.(conv\d)\.weight$", r"\1.\2.weight"),
    (r"^(layer\d+\.\d+)\.(bn\d)_(\d+)\.(\w+)$", r"\1.\2.norms.\3.\4"),
    (r"^(layer\d+\.\d+)\.(bn\d)\.(\w+)$", r"\1.\2.\3"),
    (r"^(layer\d+\.\d+)\.downsample\.0\.weight$", r"\1.downsample_conv.weight"),
    (r"^(layer\d+\.\d+)\.downsample\.1\.(\w+)$", r"\1.downsample_bn.\2"),
    (r"^(layer\d+\.\d+)\.downsample_conv\.weight$", r"\1.downsample_conv.weight"),
    (r"^(layer\d+\.\d+)\.downsample_bn_(\d+)\.(\w+)$", r"\1.downsample_bn.norms.\2.\3"),
    (r"^(layer\d+\.\d+)\.adaconv_(\d+)\.weight$", r"\1.wa.convs.\2.weight"),
))


class TemporalBlock(nn.Module):
    """A ResNet BasicBlock or Bottleneck with the temporal shift at the start of its residual branch.

    The Weight Alteration slot sits between the shift and conv1 (an identity in vanilla TSM; per-branch depthwise
    1x1 convolutions in TSM-FFN, folded into conv1's weights: ``conv1(s + wa(s)) == conv1 with its input channels
    scaled by 1 + w``, the same map without an extra pass over the activation).

    Parameters
    ----------
    kind : str
        "basic" or "bottleneck".
    in_channels, planes, stride : int
        As in torchvision (the stride sits on the 3x3 conv, ResNet v1.5).
    fold_div : int
        1/fold_div of the channels shifted each way.
    shift_impl : str
        "autograd" (the fast Function), "naive" (benchmark baseline) or "none".
    """

    FOLDS_WEIGHT_ALTERATION = True  # engine.cost counts the unfolded form separately

    def __init__(self, kind: str, in_channels: int, planes: int, stride: int, fold_div: int, shift_impl: str) -> None:
        super().__init__()
        self.kind = kind
        self.fold_div = fold_div
        self.shift = SHIFT_IMPLEMENTATIONS[shift_impl]
        out_channels = planes * BLOCK_EXPANSION[kind]
        self.wa = WeightAlterationSlot(in_channels, dims=2)
        if kind == "bottleneck":
            self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_channels)
        else:
            self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        needs_downsample = stride != 1 or in_channels != out_channels
        self.downsample_conv = None
        self.downsample_bn = None
        if needs_downsample:
            self.downsample_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.downsample_bn = nn.BatchNorm2d(out_channels)

    def _conv1_after_wa(self, shifted: torch.Tensor) -> torch.Tensor:
        """conv1(s + wa(s)), with the per-channel factors 1 + w folded into conv1's weight."""
        scale = self.wa.channel_scale()
        if scale is None:
            return self.conv1(shifted)
        weight = self.conv1.weight * scale.to(self.conv1.weight.dtype).view(1, -1, 1, 1)
        return nn.functional.conv2d(shifted, weight, None, self.conv1.stride, self.conv1.padding)

    def forward(self, features: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """The block on (N*T, C, H, W) features whose clips are `clip_frames` consecutive frames."""
        residual = self.shift(features, clip_frames, self.fold_div)
        residual = self.relu(self.bn1(self._conv1_after_wa(residual)))
        residual = self.bn2(self.conv2(residual))
        if self.kind == "bottleneck":
            residual = self.bn3(self.conv3(self.relu(residual)))
        identity = features
        if self.downsample_conv is not None:
            identity = self.downsample_bn(self.downsample_conv(features))
        return self.relu(residual + identity)


class TSMResNet(VideoModel):
    """TSM-ResNet (vanilla) or TSM-FFN, taking videos (N, T, 3, H, W) and returning frame-averaged logits.

    Parameters
    ----------
    arch : str
        A key of ``ARCH_SPECS``.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int or None
        The trained frame counts of TSM-FFN (one branch each); None for vanilla TSM.
    shift_mode : str
        "per-video" (the shift never crosses videos) or "official" (a multi-frame-count training step groups every
        branch's batch in clips of the highest frame count, as the official FFN training did).
    fold_div : int
        1/fold_div of the channels shifted each way.
    dropout : float
        Dropout before the classifier.
    channels_last : bool
        Run the (N*T, 3, H, W) view and the weights in channels_last memory format.
    private_norms : bool
        FFN: a BatchNorm set per branch (True) or one shared set (ablation).
    weight_alteration : bool
        FFN: per-branch Weight Alteration (True) or none (ablation).
    wa_init : str
        "as-run" (kaiming fan_out, what the official code ran) or "paper" (N(0, 1e-3)).
    shift_impl : str
        "autograd", "naive" (benchmark baseline only) or "none" (a 2D ResNet, for single-image pretraining).
    """

    OFFICIAL_KEY_PREFIX = OFFICIAL_TSM_PREFIX
    OFFICIAL_KEY_RULES = OFFICIAL_TSM_KEY_RULES

    def __init__(
        self,
        arch: str,
        num_classes: int,
        trained_frames: tuple[int, ...] | None,
        shift_mode: str,
        fold_div: int,
        dropout: float,
        channels_last: bool,
        private_norms: bool,
        weight_alteration: bool,
        wa_init: str,
        shift_impl: str,
    ) -> None:
        super().__init__()
        spec = ARCH_SPECS[arch]
        self.arch = arch
        self.spec = spec
        self.trained_frames = tuple(sorted(trained_frames)) if trained_frames else None
        self.shift_mode = shift_mode
        self.channels_last = channels_last
        self._build_stem(spec)
        self.layer_names = self._build_stages(spec, fold_div, shift_impl)
        self.feature_dim = spec.widths[-1] * BLOCK_EXPANSION[spec.block]
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        if self.trained_frames:
            convert_to_ffn(self, self.trained_frames, private_norms, weight_alteration)
        self._init_weights(wa_init)

    @property
    def classifier(self) -> nn.Linear:
        """The shared classifier."""
        return self.fc

    def _build_stem(self, spec: ArchSpec) -> None:
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(3, spec.stem_channels, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, spec.stem_channels, 3, stride=2, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(spec.stem_channels)
        self.relu = nn.ReLU(inplace=True)

    def _build_stages(self, spec: ArchSpec, fold_div: int, shift_impl: str) -> list[str]:
        names = []
        in_channels = spec.stem_channels
        for stage_index, (blocks, width, stride) in enumerate(zip(spec.layers, spec.widths, spec.stage_strides)):
            stage = []
            for block_index in range(blocks):
                block_stride = stride if block_index == 0 else 1
                stage.append(TemporalBlock(spec.block, in_channels, width, block_stride, fold_div, shift_impl))
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
            for alteration in weight_alteration_modules(self):
                for conv in alteration.convs.values():
                    nn.init.normal_(conv.weight, 0.0, PAPER_WA_STD)
        nn.init.normal_(self.fc.weight, 0.0, HEAD_INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def training_clip_frames(self, frames: int, highest: int) -> int:
        """Frames per shift clip in a multi-frame-count step: the official mode groups by the highest count."""
        return highest if self.shift_mode == "official" else frames

    def _frame_logits(self, images: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Per-frame logits of (N*T, 3, H, W) frames."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for name in self.layer_names:
            for block in getattr(self, name):
                features = block(features, clip_frames)
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)
        return self.fc(self.dropout(pooled))

    def forward_branch(self, videos: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Frame-averaged logits (N, classes) of videos (N, T, 3, H, W) with the branch in scope."""
        num_videos, frames = videos.shape[:2]
        images = videos.reshape(num_videos * frames, *videos.shape[2:])
        logits = self._frame_logits(images, clip_frames)
        return logits.view(num_videos, frames, -1).mean(dim=1)

    def load_pretrained(self, source: str) -> BackboneLoad:
        """ImageNet initialisation: "imagenet" (torchvision's V1 weights) or a torchvision-style ResNet file."""
        return load_imagenet_weights(self, self.arch, source)


def build_tsm(
    arch: str,
    num_classes: int,
    trained_frames: tuple[int, ...] | None = None,
    *,
    shift_mode: str = "per-video",
    fold_div: int = DEFAULT_FOLD_DIV,
    dropout: float = DEFAULT_DROPOUT,
    channels_last: bool = False,
    private_norms: bool = True,
    weight_alteration: bool = True,
    wa_init: str = "as-run",
    shift_impl: str = "autograd",
) -> TSMResNet:
    """Build a TSM-ResNet (``trained_frames=None``) or a TSM-FFN (``trained_frames=(4, 8, 16)``).

    The registry's entry points ("resnet18", "resnet34", "resnet50", "resnet101", "tiny") call this with their
    ``arch``; use ``model.build_model(arch, ...)``.

    Parameters
    ----------
    arch : str
        A key of ARCH_SPECS.
    num_classes : int
        Classifier outputs.
    trained_frames : tuple of int, optional
        Trained frame counts of TSM-FFN; None builds vanilla TSM.
    shift_mode : str
        "per-video" (default; the shift never crosses videos) or "official" (reproduces the official FFN training,
        where a multi-frame-count step groups each branch's batch in clips of the highest frame count).
    fold_div : int
        1/fold_div of the channels shifted in each direction (8).
    dropout : float
        Dropout before the classifier (0.5).
    channels_last : bool
        Weights and the (N*T, 3, H, W) view in channels_last memory format (faster with CUDA + AMP).
    private_norms : bool
        FFN: private BatchNorm per frame count (False: one shared set, an ablation).
    weight_alteration : bool
        FFN: Weight Alteration convs (False: none, an ablation).
    wa_init : str
        "as-run" (kaiming fan_out, as the official code ran) or "paper" (N(0, 1e-3)).
    shift_impl : str
        "autograd" (the fast shift), "naive" (slice-assignment baseline, for benchmarks) or "none" (no shift: a
        plain 2D ResNet, used to pretrain a backbone on single images).
    """
    check_choice("shift_mode", shift_mode, SHIFT_MODES)
    check_choice("wa_init", wa_init, WA_INITS)
    check_choice("shift_impl", shift_impl, list(SHIFT_IMPLEMENTATIONS))
    model = TSMResNet(
        arch=arch, num_classes=num_classes, trained_frames=trained_frames, shift_mode=shift_mode,
        fold_div=int(fold_div), dropout=float(dropout), channels_last=bool(channels_last),
        private_norms=bool(private_norms), weight_alteration=bool(weight_alteration), wa_init=wa_init,
        shift_impl=shift_impl,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


for _arch in ARCH_SPECS:
    register_model(_arch, family=FAMILY, default_pretrained=IMAGENET if _arch in TORCHVISION_V1_WEIGHTS else None)(
        functools.partial(build_tsm, _arch))

# The official TSM-FFN run on Something-Something V2 (FFN-pytorch, 2D_Network: the exp/ run scripts, main_FFN.py,
# opts.py): 2 GPUs x 16 videos, lr 0.01 at the total batch of 32, x0.1 at epochs 20 and 40 of 50, weight decay 5e-4
# without norms and biases, classifier lr x5 / x10, dropout 0.5, fp16 AMP (gradient clipping never applied under
# it), validation in fp32, the training shift grouping 16 frames per branch batch, multi-scale crop 224.
OFFICIAL_RECIPE = {
    "batch_size": 16, "total_batch": 32, "lr": 0.01, "lr_batch": 32, "optimizer": "sgd", "momentum": 0.9,
    "weight_decay": 5e-4, "param_groups": "official-tsm", "schedule": "step", "lr_steps": [20, 40],
    "warmup_epochs": 0.0, "epochs": 50, "dropout": 0.5, "clip_grad": None, "shift_mode": "official",
    "precision": "fp16", "val_precision": "fp32", "crop_size": 224, "multi_scale": True, "sampling": "independent",
}
# The official run scripts are the same for Something-Something V1, V2 and Kinetics-400 but for Kinetics' weight
# decay (2D_Network/exp/tsm_k400*/run.sh: --wd 1e-4).
OFFICIAL_DATASET_OVERRIDES = {"k400": {"weight_decay": 1e-4}}
register_recipe(FAMILY, "official", OFFICIAL_RECIPE, OFFICIAL_DATASET_OVERRIDES)
register_reference_run(FAMILY, "resnet50", (4, 8, 16))


# Our names of a vanilla (shared-BN, no Weight Alteration) model -> torchvision ResNet names; the first match wins.
TORCHVISION_RULES: KeyRules = compile_rules((
    (r"^(layer\d+\.\d+)\.downsample_conv\.weight$", r"\1.downsample.0.weight"),
    (r"^(layer\d+\.\d+)\.downsample_bn\.(\w+)$", r"\1.downsample.1.\2"),
))


def to_torchvision_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a vanilla TSM under torchvision ResNet names (the inverse of the official key rules).

    A file holding it loads through the same path as torchvision's ImageNet weights (``pretrained=<path>``).

    Raises
    ------
    ValueError
        If the model has private BatchNorm sets or Weight Alteration (no torchvision counterpart).
    """
    exported: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if ".wa.convs." in key or ".norms." in key:
            raise ValueError(f"to_torchvision_state_dict: {key} has no torchvision name; export a vanilla model "
                             "(trained_frames=None)")
        name = key
        for pattern, replacement in TORCHVISION_RULES:
            if pattern.match(key):
                name = pattern.sub(replacement, key)
                break
        exported[name] = value.detach().clone()
    return exported


def build_image_resnet(arch: str, num_classes: int) -> TSMResNet:
    """The 2D counterpart of a TSM for single-image pretraining: the same ResNet without the temporal shift."""
    return build_model(arch, num_classes, trained_frames=None, pretrained=None, dropout=0.0, shift_impl="none")


# TSM's backbone is a 2D ResNet, initialised from ImageNet: its single-image pretraining trains the same ResNet without
# the shift and writes it under torchvision's names, which `load_pretrained` reads like torchvision's ImageNet file.
for _arch in ARCH_SPECS:
    register_image_pretraining(_arch, ImagePretraining(build=functools.partial(build_image_resnet, _arch),
                                                       export=to_torchvision_state_dict, input_spec=InputSpec()))


OFFICIAL_FFN_MARKER = re.compile(r"(^|\.)(bn1|downsample_bn)_(\d+)\.weight$")


@register_official_reader(FAMILY)
def read_official_tsm(checkpoint: Mapping[str, Any]) -> OfficialFile | None:
    """An official TSM / TSM-FFN file (FFN-pytorch or mit-han-lab): arch from its layout, branches from its names.

    The backbone's depth is read off the blocks (a Bottleneck has conv3; the block count of layer3 tells 50 from
    101); an FFN file's branches from its private BatchNorm suffixes (bn1_4, ...). None when the keys are not a TSM's.
    """
    state = {strip_prefix(key, OFFICIAL_TSM_PREFIX): value
             for key, value in without_data_parallel_prefix(checkpoint).items()}
    if "new_fc.weight" not in state or "conv1.weight" not in state or any(".convs." in key for key in state):
        return None
    blocks = {int(key.split(".")[1]) for key in state if key.startswith("layer3.")}
    bottleneck = any(key.startswith("layer1.0.conv3") for key in state)
    by_layout = {(spec.block == "bottleneck", spec.layers[2]): name for name, spec in ARCH_SPECS.items()}
    arch = by_layout.get((bottleneck, len(blocks)))
    if arch is None:
        return None
    branches = sorted({int(match.group(3)) for key in state if (match := OFFICIAL_FFN_MARKER.search(key))})
    return OfficialFile(arch, tuple(branches) or None, int(state["new_fc.weight"].shape[0]))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)
