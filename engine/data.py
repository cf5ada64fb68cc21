"""The data side of a run: the class count and the facts of a manifest (dataset, flip rule, class names, frame
size), and the loader of a split (its batches arrive on the training device: data_pipeline's VideoLoader moves and
normalises them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_pipeline import build_loader
from data_pipeline.augment import Normalisation
from data_pipeline.stream import ShardDataError
from shard_format import ManifestError, manifest_path, read_manifest

NUM_CLASSES_KEY = "num_classes"


def read_num_classes(shards: Path, split: str) -> int:
    """Return the class count recorded in a split's manifest settings.

    ``make shards`` records ``settings["num_classes"]`` (the size of the dataset's class list) in every manifest.

    Raises
    ------
    SystemExit
        If the manifest is missing, unreadable or records no class count (the message names the file and the fix).
    """
    path = manifest_path(shards, split)
    try:
        manifest = read_manifest(path)
    except ManifestError as error:
        raise SystemExit(str(error)) from error
    value = manifest.get("settings", {}).get(NUM_CLASSES_KEY)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise SystemExit(f"{path}: records no class count; pass --num-classes, or rebuild the shards with make shards")


def read_shard_facts(shards: Path, split: str) -> dict[str, Any]:
    """Return what a split's manifest records about its dataset, frames and classes (each None when absent).

    {"dataset": the layout `make shards` read ("ssv2", "k400", ...), "flip": whether training may flip the frames
    horizontally (the dataset's rule), "class_names": in class-index order, "num_classes": the class count,
    "short_side": the frames' short side (0: native size), "jpeg_quality": the IJG quality they were encoded at,
    "fps": the frame rate video files were resampled to (None: every frame)}. An unreadable manifest gives all
    None (read_num_classes says what is wrong with it).
    """
    try:
        manifest = read_manifest(manifest_path(shards, split))
    except ManifestError:
        manifest = {}
    settings = manifest.get("settings", {})
    names = manifest.get("class_names")
    dataset, flip, fps = manifest.get("dataset"), manifest.get("flip"), settings.get("fps")
    return {
        "dataset": dataset if isinstance(dataset, str) and dataset else None,
        "flip": flip if isinstance(flip, bool) else None,
        "class_names": [str(name) for name in names] if isinstance(names, list) and names else None,
        "num_classes": _int_or_none(settings.get(NUM_CLASSES_KEY)),
        "short_side": _int_or_none(settings.get("short_side")),
        "jpeg_quality": _int_or_none(settings.get("jpeg_quality")),
        "fps": fps if isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0 else None,
    }


def _int_or_none(value: Any) -> int | None:
    """The value if it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def normalisation_of(network: Any) -> Normalisation:
    """The loader's normalisation for a model: the mean, std and channel order of its input spec."""
    spec = network.input_spec
    return Normalisation(tuple(spec.mean), tuple(spec.std), spec.channel_order)


def check_model_input(network: Any, frame_counts: Any, crop_size: int) -> None:
    """Raise ValueError (one line) when the model cannot run at one of the frame counts or at the crop size.

    The model's input spec decides (e.g. SlowFast takes multiples of its alpha; attention models need 32 px).
    """
    for frames in sorted(set(int(count) for count in frame_counts)):
        network.input_spec.check_frames(frames)
    network.input_spec.check_size(crop_size, crop_size)


def make_loader(shards: Path, split: str, **options: Any) -> Any:
    """Build the data_pipeline loader of a split; a split that cannot be read is a one-line SystemExit.

    Parameters
    ----------
    shards : Path
        The folder holding ``<split>.manifest.json`` and its tars.
    split : str
        The split's name.
    **options
        data_pipeline.options.PipelineConfig's options, by keyword (frames, batch_size, train, device, rank,
        world_size, the flags' values from ``loader_options``, ...).

    Raises
    ------
    SystemExit
        With one line naming the manifest when the split cannot be read or holds no video.
    """
    try:
        return build_loader(shards, split, **options)
    except ShardDataError as error:
        raise SystemExit(str(error)) from error


def timed_batches(loader: Any) -> Iterator[tuple[Any, float]]:
    """Yield (batch, seconds spent waiting for it)."""
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start
