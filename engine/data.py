"""The data side of a run: the class count and the inference facts (class names, frame size) from a manifest,
the loader of a split from the command-line options, and batches on the training device.

The loader hands over batches whose frames are already on the training device (data_pipeline's VideoLoader moves
and normalises them), so ``batch_on_device`` moves only the labels; its ``.to`` on the frames is a no-op there.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from data_pipeline import build_loader
from data_pipeline.stream import ShardDataError
from preprocess.shard_format import ManifestError, manifest_path, read_manifest

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
    """Return what a split's manifest records about its frames and classes, for inference (None when absent).

    {"class_names": labels.json's templates in class-index order, "short_side": the frames' short side (0:
    native size), "jpeg_quality": the IJG quality they were encoded at}. An unreadable manifest gives all None
    (read_num_classes has already said what is wrong with it).
    """
    try:
        manifest = read_manifest(manifest_path(shards, split))
    except ManifestError:
        manifest = {}
    settings = manifest.get("settings", {})
    names = manifest.get("class_names")
    return {
        "class_names": [str(name) for name in names] if isinstance(names, list) and names else None,
        "short_side": _int_or_none(settings.get("short_side")),
        "jpeg_quality": _int_or_none(settings.get("jpeg_quality")),
    }


def _int_or_none(value: Any) -> int | None:
    """The value if it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def make_loader(args: argparse.Namespace, split: str, frames: Sequence[int], train: bool, batch_size: int,
                device: torch.device, rank: int, world_size: int, **extra: Any) -> Any:
    """Build the data_pipeline loader of a split from the command-line options.

    Parameters
    ----------
    args : argparse.Namespace
        Reads shards, decode, workers, seed, sampling, short_video, crop_size, multi_scale (training only),
        tar_reader and test_resize (when not None).
    split : str
        The split's name (its manifest is ``<shards>/<split>.manifest.json``).
    frames : sequence of int
        The frame counts each batch holds.
    train : bool
        Training (augmentation and shuffling) or evaluation (the test transform, every video once).
    batch_size : int
        Videos per batch of this process.
    device : torch.device
        The training device (batches arrive there).
    rank, world_size : int
        This process's share of the data under DDP.
    **extra
        Passed to build_loader as well (evaluate.py: test_crops, test_clips).

    Raises
    ------
    SystemExit
        With one line naming the manifest when the split cannot be read or holds no video.
    """
    options: dict[str, Any] = {
        "shards": args.shards, "split": split, "rates": tuple(frames), "batch_size": batch_size, "train": train,
        "decode": args.decode, "device": device, "num_workers": args.workers, "seed": args.seed,
        "sampling": args.sampling, "short_video": args.short_video, "crop_size": args.crop_size,
        "multi_scale": args.multi_scale and train, "flip": False, "tar_reader": args.tar_reader, **extra,
    }
    if args.test_resize is not None:
        options["test_resize"] = args.test_resize
    if world_size > 1:
        options.update(rank=rank, world_size=world_size)
    try:
        return build_loader(**options)
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


def batch_on_device(batch: dict[str, Any], frames: Sequence[int],
                    device: torch.device) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Return ({T: frames} for the requested frame counts, labels), both on the device.

    The loader delivers frames on the device already (``.to`` returns them as they are); labels are moved here.
    """
    frames_by_count = {count: batch["frames"][count].to(device, non_blocking=True) for count in frames}
    return frames_by_count, batch["label"].to(device, non_blocking=True)
