"""Loading official FFN / TSM checkpoints (and torchvision ResNet weights) into our TSMResNet.

Recognised key layouts (an optional DataParallel "module." prefix is removed first):

- FFN-pytorch TSM-FFN: ``base_model.conv1.weight``, ``base_model.bn1_{4,8,16}.*``,
  ``base_model.layer{l}.{i}.conv{1,2,3}.weight``, ``...bn{1,2,3}_{4,8,16}.*``, ``layer{l}.0.downsample_conv.weight``,
  ``layer{l}.0.downsample_bn_{4,8,16}.*``, ``layer{l}.{i}.adaconv_{4,8,16}.weight``, ``new_fc.*``.
- FFN-pytorch TSM baseline: torchvision names under ``base_model.`` (``downsample.0`` / ``downsample.1``), ``new_fc.*``.
- mit-han-lab temporal-shift-module: as the baseline, but each block's conv1 is ``conv1.net.weight``.
- torchvision ResNet (ImageNet init): torchvision names without prefix; ``fc.*`` is not used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from model.tsm_resnet import SHARED_BRANCH

DATA_PARALLEL_PREFIX = "module."
OFFICIAL_BACKBONE_PREFIX = "base_model."
IGNORED_BUFFER_SUFFIX = "num_batches_tracked"
HEAD_PREFIXES = ("fc.", "new_fc.")
MAX_KEYS_IN_MESSAGE = 6


class CheckpointPayloadError(ValueError):
    """A checkpoint file read fine but holds something other than a dict (a list, a tensor, a number, ...).

    Attributes
    ----------
    payload_type : str
        The type name of what the file holds ("list", "Tensor", ...).
    """

    def __init__(self, message: str, payload_type: str) -> None:
        super().__init__(message)
        self.payload_type = payload_type

# (pattern, replacement) applied to a key without "module." / "base_model."; the first match wins.
_KEY_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^new_fc\.(weight|bias)$", r"fc.\1"),
        (r"^conv1\.weight$", r"conv1.weight"),
        (r"^bn1_(\d+)\.(\w+)$", r"bn1.norms.\1.\2"),
        (r"^bn1\.(\w+)$", rf"bn1.norms.{SHARED_BRANCH}.\1"),
        (r"^(layer\d+\.\d+)\.conv1\.net\.weight$", r"\1.conv1.weight"),
        (r"^(layer\d+\.\d+)\.(conv\d)\.weight$", r"\1.\2.weight"),
        (r"^(layer\d+\.\d+)\.(bn\d)_(\d+)\.(\w+)$", r"\1.\2.norms.\3.\4"),
        (r"^(layer\d+\.\d+)\.(bn\d)\.(\w+)$", rf"\1.\2.norms.{SHARED_BRANCH}.\3"),
        (r"^(layer\d+\.\d+)\.downsample\.0\.weight$", r"\1.downsample_conv.weight"),
        (r"^(layer\d+\.\d+)\.downsample\.1\.(\w+)$", rf"\1.downsample_bn.norms.{SHARED_BRANCH}.\2"),
        (r"^(layer\d+\.\d+)\.downsample_conv\.weight$", r"\1.downsample_conv.weight"),
        (r"^(layer\d+\.\d+)\.downsample_bn_(\d+)\.(\w+)$", r"\1.downsample_bn.norms.\2.\3"),
        (r"^(layer\d+\.\d+)\.adaconv_(\d+)\.weight$", r"\1.wa.convs.\2.weight"),
    )
)


def strip_prefix(key: str, prefix: str) -> str:
    """``key`` without a leading ``prefix`` (unchanged when it does not start with it)."""
    return key[len(prefix):] if key.startswith(prefix) else key


def translate_official_key(key: str) -> str | None:
    """Our parameter name for one official (or torchvision) key, or None when it has no counterpart."""
    name = strip_prefix(strip_prefix(key, DATA_PARALLEL_PREFIX), OFFICIAL_BACKBONE_PREFIX)
    for pattern, replacement in _KEY_RULES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def _expand_shared_norms(key: str, model_keys: set[str]) -> list[str]:
    """Targets for a shared-BN key: itself if the model has it, else the same BN in every private branch."""
    marker = f".norms.{SHARED_BRANCH}."
    if key in model_keys or marker not in key:
        return [key]
    head, tail = key.split(marker, 1)
    pattern = re.compile(re.escape(head) + r"\.norms\.[^.]+\." + re.escape(tail) + "$")
    return sorted(candidate for candidate in model_keys if pattern.match(candidate)) or [key]


def map_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    expand_shared_bn: bool = False,
    skip_head: bool = False,
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Translate an official or torchvision state dict into our names.

    Parameters
    ----------
    model : nn.Module
        The target model.
    state_dict : mapping
        Official keys to tensors.
    expand_shared_bn : bool
        Copy a shared BatchNorm into every private branch of an FFN model (ImageNet init).
    skip_head : bool
        Ignore classifier keys (``fc.*`` / ``new_fc.*``): the ImageNet head is not used.

    Returns
    -------
    tuple
        (translated state dict, missing model keys, unexpected source keys). Shape mismatches count as unexpected
        (reported as "key (shape a vs b)"). ``num_batches_tracked`` buffers are never reported missing.
    """
    target = model.state_dict()
    model_keys = set(target)
    translated: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for source_key, value in state_dict.items():
        bare_key = strip_prefix(strip_prefix(source_key, DATA_PARALLEL_PREFIX), OFFICIAL_BACKBONE_PREFIX)
        if skip_head and bare_key.startswith(HEAD_PREFIXES):
            continue
        our_key = translate_official_key(source_key)
        targets = _expand_shared_norms(our_key, model_keys) if (our_key and expand_shared_bn) else [our_key]
        for key in targets:
            if key is None or key not in model_keys:
                unexpected.append(source_key)
            elif tuple(value.shape) != tuple(target[key].shape):
                unexpected.append(f"{source_key} (shape {tuple(value.shape)} vs {tuple(target[key].shape)})")
            else:
                translated[key] = value
    missing = [key for key in target if key not in translated and not key.endswith(IGNORED_BUFFER_SUFFIX)]
    return translated, missing, unexpected


# Our names of a vanilla (shared-BN, no Weight Alteration) model -> torchvision ResNet names; the first match wins.
_TORCHVISION_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^(layer\d+\.\d+)\.downsample_conv\.weight$", r"\1.downsample.0.weight"),
        (rf"^(layer\d+\.\d+)\.downsample_bn\.norms\.{SHARED_BRANCH}\.(\w+)$", r"\1.downsample.1.\2"),
        (rf"^(.*bn\d)\.norms\.{SHARED_BRANCH}\.(\w+)$", r"\1.\2"),
    )
)


def to_torchvision_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a vanilla model under torchvision ResNet names (the inverse of ``map_state_dict``).

    A file holding it loads through the same path as torchvision's ImageNet weights (``pretrained=<path>``).

    Raises
    ------
    ValueError
        If the model has private BatchNorm sets or Weight Alteration (no torchvision counterpart).
    """
    exported: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if ".wa.convs." in key or (".norms." in key and f".norms.{SHARED_BRANCH}." not in key):
            raise ValueError(f"to_torchvision_state_dict: {key} has no torchvision name; export a vanilla model "
                             "(ffn_frames=None)")
        name = key
        for pattern, replacement in _TORCHVISION_RULES:
            if pattern.match(key):
                name = pattern.sub(replacement, key)
                break
        exported[name] = value.detach().clone()
    return exported


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_IN_MESSAGE])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > MAX_KEYS_IN_MESSAGE else ''})"


def load_official_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load an official FFN, FFN-repo TSM or mit-han-lab TSM state dict into ``model``.

    Parameters
    ----------
    model : nn.Module
        A model from ``build_model`` whose architecture matches the checkpoint (FFN checkpoints need
        ``ffn_frames`` equal to the checkpoint's frame counts and private BN; TSM checkpoints need ``ffn_frames=None``).
    state_dict : mapping
        The checkpoint's "state_dict" (a whole checkpoint dict holding "state_dict" is accepted too), with or
        without the "module." prefix.
    strict : bool
        Raise ValueError when any model key is missing or any checkpoint key is unexpected (default). With False,
        load what matches and return the lists.

    Returns
    -------
    tuple of list of str
        (missing model keys, unexpected checkpoint keys).
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    translated, missing, unexpected = map_state_dict(model, state_dict)
    if strict and (missing or unexpected):
        raise ValueError(
            f"official checkpoint does not match this model: missing {_summarise(missing)}; unexpected "
            f"{_summarise(unexpected)}. Build the model with the checkpoint's architecture (ffn_frames, "
            "num_classes, arch) or pass strict=False"
        )
    model.load_state_dict(translated, strict=False)
    return missing, unexpected


def _safe_globals() -> list:
    """Numpy scalar types that official checkpoints pickle (best_prec1), allowed under weights_only=True."""
    import numpy

    allowed: list = [numpy.dtype]
    core = getattr(numpy, "_core", None) or getattr(numpy, "core", None)
    scalar = getattr(getattr(core, "multiarray", None), "scalar", None)
    if scalar is not None:
        allowed.append(scalar)
    dtypes = getattr(numpy, "dtypes", None)
    if dtypes is not None:
        names = ("Float64DType", "Float32DType", "Int64DType")
        allowed.extend(getattr(dtypes, name) for name in names if hasattr(dtypes, name))
    return allowed


def load_checkpoint_file(path: str | os.PathLike, trust_pickle: bool = False) -> dict:
    """Read a checkpoint file on the CPU with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : str or PathLike
        An official FFN/TSM checkpoint (a dict with "state_dict", "epoch", "arch", "best_prec1"), one of ours, or a
        bare state dict.
    trust_pickle : bool
        Fall back to full unpickling when the safe loader refuses the file (only for files you trust).

    Returns
    -------
    dict
        The loaded object.

    Raises
    ------
    ValueError
        When the safe loader refuses the file and `trust_pickle` is False.
    CheckpointPayloadError
        When the file holds something other than a dict (a subclass of ValueError).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist: pass the path of a .pth/.pt/.pth.tar file")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the safe unpickler raises several types
        if not trust_pickle:
            raise ValueError(
                f"checkpoint {path} cannot be read with torch.load(weights_only=True) ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); if you trust the file pass trust_pickle=True"
            ) from error
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(loaded, dict):
        raise CheckpointPayloadError(
            f"checkpoint {path} holds a {type(loaded).__name__}, expected a dict (a state dict or a checkpoint)",
            type(loaded).__name__,
        )
    return loaded
