"""Loading official checkpoints (and pretrained backbone files) into our models, and reading checkpoint files.

Each family declares how official keys map onto its own names: ``OFFICIAL_KEY_PREFIX`` (removed, like the
DataParallel "module." prefix) and ``OFFICIAL_KEY_RULES`` ((pattern, replacement) pairs, the first match wins;
see e.g. model.tsm_resnet.OFFICIAL_TSM_KEY_RULES). A plain norm key of the source fills every private copy of an
FFN's norm when ``expand_shared_norms`` is set (pretrained initialisation: each branch starts from the same norm).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn


DATA_PARALLEL_PREFIX = "module."
IGNORED_BUFFER_SUFFIX = "num_batches_tracked"
MAX_KEYS_IN_MESSAGE = 6
# Where a whole checkpoint dict keeps its state dict: FFN-pytorch / TSM files, PySlowFast files.
# Where checkpoint dicts keep their state dict: official TSM / FFN files ("state_dict"), PySlowFast ("model_state"),
# UniFormer releases ("model").
CHECKPOINT_STATE_KEYS = ("state_dict", "model_state", "model")


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


Replacement = TypeVar("Replacement")
KeyRules = tuple[tuple[re.Pattern[str], str], ...]  # a family's key rules: (compiled pattern, replacement) pairs


def compile_rules(pairs: Iterable[tuple[str, Replacement]]) -> tuple[tuple[re.Pattern[str], Replacement], ...]:
    """(pattern, replacement) pairs with each pattern compiled, in their order (the first match wins where a family
    applies them); the form of ``VideoModel.OFFICIAL_KEY_RULES``."""
    return tuple((re.compile(pattern), replacement) for pattern, replacement in pairs)


def strip_prefix(key: str, prefix: str) -> str:
    """``key`` without a leading ``prefix`` (unchanged when it does not start with it)."""
    return key[len(prefix):] if key.startswith(prefix) else key


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict a checkpoint dict holds under one of CHECKPOINT_STATE_KEYS, else the dict itself."""
    for holder in CHECKPOINT_STATE_KEYS:
        if isinstance(checkpoint.get(holder), Mapping):
            return checkpoint[holder]
    return checkpoint


def without_data_parallel_prefix(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict of a checkpoint (see `unwrap_state_dict`) with the DataParallel "module." prefix removed."""
    return {strip_prefix(str(key), DATA_PARALLEL_PREFIX): value for key, value in unwrap_state_dict(checkpoint).items()}


def bare_official_key(model: nn.Module, key: str) -> str:
    """An official key without the DataParallel "module." prefix and the family's own prefix."""
    return strip_prefix(strip_prefix(key, DATA_PARALLEL_PREFIX), getattr(model, "OFFICIAL_KEY_PREFIX", ""))


def translate_official_key(model: nn.Module, key: str) -> str | None:
    """Our parameter name for one official key of `model`'s family, or None when it has no counterpart.

    The family's ``OFFICIAL_KEY_RULES`` ((pattern, replacement) pairs, the first match wins) apply to the key
    without its prefixes.
    """
    name = bare_official_key(model, key)
    for pattern, replacement in getattr(model, "OFFICIAL_KEY_RULES", ()):
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def _expand_shared_norms(key: str, model_keys: set[str]) -> list[str]:
    """Targets for a plain norm key: itself if the model has it, else the same norm in every private branch.

    ``layer1.0.bn1.weight`` becomes ``layer1.0.bn1.norms.<T>.weight`` for every trained frame count T.
    """
    if key in model_keys or "." not in key:
        return [key]
    head, leaf = key.rsplit(".", 1)
    pattern = re.compile(re.escape(head) + r"\.norms\.[^.]+\." + re.escape(leaf) + "$")
    return sorted(candidate for candidate in model_keys if pattern.match(candidate)) or [key]


def map_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    expand_shared_norms: bool = False,
    skip_prefixes: tuple[str, ...] = (),
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Translate an official (or pretrained backbone) state dict into our names.

    Parameters
    ----------
    model : nn.Module
        The target model.
    state_dict : mapping
        Official keys to tensors.
    expand_shared_norms : bool
        Copy a plain norm layer into every private copy of an FFN model (pretrained initialisation).
    skip_prefixes : tuple of str
        Ignore source keys starting with these (after the prefixes are removed): e.g. a pretraining classifier.

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
        if skip_prefixes and bare_official_key(model, source_key).startswith(skip_prefixes):
            continue
        our_key = translate_official_key(model, source_key)
        targets = _expand_shared_norms(our_key, model_keys) if (our_key and expand_shared_norms) else [our_key]
        for key in targets:
            if key is None or key not in model_keys:
                unexpected.append(source_key)
            elif tuple(value.shape) != tuple(target[key].shape):
                unexpected.append(f"{source_key} (shape {tuple(value.shape)} vs {tuple(target[key].shape)})")
            else:
                translated[key] = value
    missing = [key for key in target if key not in translated and not key.endswith(IGNORED_BUFFER_SUFFIX)]
    return translated, missing, unexpected


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_IN_MESSAGE])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > MAX_KEYS_IN_MESSAGE else ''})"


def load_official_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load an official state dict into ``model`` (FFN-pytorch, its baselines, mit-han-lab TSM, PySlowFast).

    Parameters
    ----------
    model : nn.Module
        A model from ``build_model`` whose architecture matches the checkpoint (FFN checkpoints need
        ``trained_frames`` equal to the checkpoint's frame counts and private norms; vanilla checkpoints need
        ``trained_frames=None``).
    state_dict : mapping
        The checkpoint's state dict (a whole checkpoint dict holding it under "state_dict", or under
        "model_state" as PySlowFast saves it, is accepted too), with or without the "module." prefix.
    strict : bool
        Raise ValueError when any model key is missing or any checkpoint key is unexpected (default). With False,
        load what matches and return the lists.

    Returns
    -------
    tuple of list of str
        (missing model keys, unexpected checkpoint keys).
    """
    state_dict = unwrap_state_dict(state_dict)
    translated, missing, unexpected = map_state_dict(model, state_dict)
    if strict and (missing or unexpected):
        raise ValueError(
            f"official checkpoint does not match this model: missing {_summarise(missing)}; unexpected "
            f"{_summarise(unexpected)}. Build the model with the checkpoint's architecture (trained_frames, "
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
