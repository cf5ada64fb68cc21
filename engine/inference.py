"""Inference shared by evaluate.py and predict.py: a checkpoint (ours or an official file of any family) loaded
into a network, what our checkpoints record for inference and the trained frame counts (the timed forward pass
is engine.cost.timed_forward).

Our checkpoints (train.py) carry an ``"inference"`` record beside the training state: arch, class count, mode,
trained frame counts, class names (from the shards' manifest), the evaluation crop and test resize, and the short
side and JPEG quality the shards were written with, so predict.py decodes a video file to the same frames the
shards hold. Older checkpoints without it still load; the training settings (``metrics["settings"]``) and the
model config give most of it.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from data_pipeline.augment import default_test_resize
from engine.checkpoint import upgrade_checkpoint
from model import (
    CheckpointPayloadError,
    build_model,
    load_checkpoint_file,
    load_official_state_dict,
    model_family,
    model_options,
)
from model.official_checkpoints import unwrap_state_dict
from model.registry import official_families, read_official_state_dict

INFERENCE_KEY = "inference"
DEFAULT_CROP_SIZE = 224
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = 0x80  # first byte of a pickle of protocol 2 or later (torch's legacy format)


@dataclasses.dataclass
class LoadedCheckpoint:
    """A network loaded from a checkpoint, in eval mode on the CPU, with what the file records about it.

    Attributes
    ----------
    network : nn.Module
        The model (``network.config`` rebuilds it; ``network.trained_frames`` lists FFN branches, None for TSM).
    settings : dict
        The training run's settings (train.py's ``metrics["settings"]``); {} for official files.
    inference : dict
        The checkpoint's inference record (see `inference_record`); {} for official files and older checkpoints.
    official : bool
        True for an official checkpoint (of any registered family).
    """

    network: nn.Module
    settings: dict[str, Any]
    inference: dict[str, Any]
    official: bool


def unreadable_reason(path: Path) -> str | None:
    """Say why a file cannot be a checkpoint from its first bytes (empty, a cut zip, not torch's format), or None."""
    with open(path, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if not head:
        return "empty file"
    if head == ZIP_MAGIC:
        return None if zipfile.is_zipfile(path) else "truncated or broken (its zip archive has no central directory)"
    if head[0] != PICKLE_PROTOCOL_OPCODE:
        return "not a PyTorch checkpoint (neither torch.save's zip nor its legacy pickle format)"
    return None


def read_checkpoint(path: Path, trust_pickle: bool, flag: str, script: str) -> dict[str, Any]:
    """Read a checkpoint file on the CPU; any problem is a one-line SystemExit naming the file and the fix.

    Parameters
    ----------
    path : Path
        The file.
    trust_pickle : bool
        Allow full unpickling when the safe loader refuses the file.
    flag, script : str
        The command-line flag that named the file and the script, for the messages.
    """
    if not path.is_file():
        raise SystemExit(f"{path}: no such checkpoint; check {flag}")
    reason = unreadable_reason(path)
    if reason is not None:
        raise SystemExit(f"{path}: {reason}; give a train.py last.pt / best.pt or an official checkpoint "
                         "(copy or download it again if it was cut)")
    try:
        return load_checkpoint_file(path, trust_pickle=trust_pickle)
    except CheckpointPayloadError as error:
        raise SystemExit(f"{path}: the file holds a {error.payload_type}, not a checkpoint dict; {script} needs a "
                         "train.py last.pt / best.pt (a dict with \"model\" and \"config\") or an official "
                         "checkpoint (a state dict, or a dict holding one)") from error
    except ValueError as error:
        raise SystemExit(f"{error}; {script}: pass --trust-pickle for a file you trust") from error
    except Exception as error:  # full unpickling of a damaged file raises many types
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise SystemExit(f"{path}: unreadable ({type(error).__name__}: {first_line}); copy or download the "
                         "checkpoint again") from error


def load_checkpoint_network(path: Path, arch: str | None, channels_last: bool, trust_pickle: bool = False,
                            flag: str = "--checkpoints", script: str = "evaluate.py") -> LoadedCheckpoint:
    """Build and load a model from one of our checkpoints or an official file of any registered family.

    An official file holds no configuration: the family that recognises its key names gives the arch, the trained
    frame counts (an FFN's branches) and the class count. `arch` (None: the file's) overrides the arch within the
    same family (e.g. another backbone depth).

    Raises
    ------
    SystemExit
        If the file is missing, unreadable, or neither format (one line naming the file and the fix).
    """
    path = Path(path)
    payload = read_checkpoint(path, trust_pickle, flag, script)
    if "config" in payload and "model" in payload:
        upgrade_checkpoint(payload)
        config = dict(payload["config"], pretrained=None)
        if "channels_last" in config:
            config["channels_last"] = channels_last
        network = build_model(**config)
        network.load_state_dict(payload["model"])
        settings = payload.get("metrics", {}).get("settings", {})
        return LoadedCheckpoint(network.eval(), settings, dict(payload.get(INFERENCE_KEY) or {}), official=False)
    state_dict = unwrap_state_dict(payload)
    found = read_official_state_dict(state_dict)
    if found is None:
        raise SystemExit(f"{path}: neither a train.py checkpoint nor an official checkpoint of a known family "
                         f"({', '.join(official_families())})")
    family, official = found
    chosen = arch or official.arch
    if model_family(chosen) != family:
        raise SystemExit(f"{path}: an official {family} file, but --arch {chosen} is a {model_family(chosen)} "
                         f"model; omit --arch or give a {family} one")
    options = {"channels_last": channels_last} if "channels_last" in model_options(chosen) else {}
    network = build_model(chosen, official.num_classes, trained_frames=official.trained_frames, **options)
    try:
        load_official_state_dict(network, state_dict, strict=True)
    except ValueError as error:
        raise SystemExit(f"{path}: {error} ({script} --arch sets the model)") from error
    return LoadedCheckpoint(network.eval(), {}, {}, official=True)


def load_network(path: Path, arch: str | None, channels_last: bool,
                 trust_pickle: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Return (model in eval mode on the CPU, training settings or {}): `load_checkpoint_network` for evaluate.py."""
    loaded = load_checkpoint_network(path, arch, channels_last, trust_pickle)
    return loaded.network, loaded.settings


def inference_record(config: dict[str, Any], mode: str, frames: list[int], crop_size: int,
                     test_resize: int | None, shard_facts: dict[str, Any]) -> dict[str, Any]:
    """Return what a checkpoint records for inference (train.py stores it under ``"inference"``).

    Parameters
    ----------
    config : dict
        The model config (``network.config``).
    mode : str
        "vanilla" or "ffn".
    frames : list of int
        The trained frame counts.
    crop_size, test_resize : int
        The evaluation crop and the short side before it (None: the loader's default for the crop).
    shard_facts : dict
        engine.data.read_shard_facts of the training split: class names, short side, JPEG quality, frame rate and
        dataset (each None when the manifest does not record it; names whose count is not the class count are
        dropped).
    """
    names = shard_facts.get("class_names")
    if names is not None and len(names) != int(config["num_classes"]):
        names = None
    return {
        "arch": config["arch"], "num_classes": int(config["num_classes"]), "mode": mode,
        "trained_frames": sorted(int(count) for count in frames), "class_names": names,
        "crop_size": int(crop_size), "test_resize": int(test_resize or default_test_resize(int(crop_size))),
        "short_side": shard_facts.get("short_side"), "jpeg_quality": shard_facts.get("jpeg_quality"),
        "fps": shard_facts.get("fps"), "dataset": shard_facts.get("dataset"),
    }


def trained_frames(loaded: LoadedCheckpoint) -> list[int]:
    """The trained frame counts: the FFN branches, else the recorded training frames ([] when unknown)."""
    branches = getattr(loaded.network, "trained_frames", None)
    if branches:
        return [int(count) for count in branches]
    recorded = loaded.inference.get("trained_frames") or loaded.settings.get("frames") or []
    return sorted(int(count) for count in recorded)
