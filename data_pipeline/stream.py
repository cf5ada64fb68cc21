"""Streaming of packed JPEG-frame shards: manifest, split across ranks and workers, per-epoch order, shuffle buffer.

Work is split over ``slots = world_size x workers`` (slot = rank * workers + worker). With at least as many shards
as slots, shards are dealt round-robin (shuffled per epoch in training with a seed shared by every worker, so the
deal is disjoint); with fewer shards, every slot reads every shard and keeps the samples whose position in the
(shared) order is congruent to its slot. Either way every sample belongs to exactly one slot.

Training: each rank yields exactly ``num_samples // (world_size * batch_size)`` full batches per epoch (the
manifest's counts), split over its workers; a worker that runs out of samples reads its own shards again in a
new order (so ranks stay disjoint within an epoch), one that has more stops at its quota. Evaluation: every
sample exactly once, no repeat, no padding; each worker's last batch may be smaller.

Frame selection happens as a sample is read (the sampled JPEG bytes are sliced out of the packed member), so the
shuffle buffer holds only the compressed frames a sample will decode.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_iterator  # at import: not once per forked worker

from data_pipeline.sampling import FramePlan
from data_pipeline.tar_reader import read_samples
from preprocess.shard_format import ManifestError, manifest_path, read_manifest

SHARD_ORDER_STREAM = 0x5A4D  # separates the shard-order random stream from the per-worker one
REQUIRED_META_KEYS = ("id", "label", "num_frames", "width", "height", "offsets", "lengths")
TAR_READERS = ("lean", "webdataset")


class ShardDataError(RuntimeError):
    """A manifest or shard cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a split: its path and number of samples (from the manifest)."""

    path: Path
    num_samples: int


def read_split(shards_dir: str | Path, split: str) -> list[ShardEntry]:
    """Read ``<split>.manifest.json`` in `shards_dir` and return its shards with their sample counts.

    Raises
    ------
    ShardDataError
        If the manifest is missing, malformed, of another format version, holds no video or lists a missing
        shard.
    """
    folder = Path(shards_dir)
    path = manifest_path(folder, split)
    try:
        manifest = read_manifest(path)
    except ManifestError as error:
        raise ShardDataError(str(error)) from error
    entries = [ShardEntry(folder / shard["name"], int(shard["num_samples"])) for shard in manifest.get("shards", [])]
    if sum(entry.num_samples for entry in entries) == 0:
        raise ShardDataError(
            f"{path}: split {split!r} holds no video (num_samples 0; its \"skipped\" list says why); "
            "fix the annotation file or the videos and rerun `make shards`, or choose another split"
        )
    missing = [entry.path.name for entry in entries if not entry.path.exists()]
    if missing:
        raise ShardDataError(f"{path}: {len(missing)} shard(s) missing (first: {missing[0]}); rerun `make shards`")
    return entries


@dataclass(frozen=True)
class Slot:
    """Who reads: rank, worker, and the totals that define the split of work."""

    rank: int
    world_size: int
    worker: int
    num_workers: int

    @property
    def index(self) -> int:
        """This slot's number among all slots."""
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        """Number of slots (ranks x workers)."""
        return self.world_size * self.num_workers


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Return the shard order of an epoch, identical in every worker of every rank (identity without shuffle)."""
    if not shuffle:
        return np.arange(num_shards)
    return np.random.default_rng([seed, epoch, SHARD_ORDER_STREAM]).permutation(num_shards)


@dataclass
class Assignment:
    """The shards a slot reads and which of their samples it keeps.

    Attributes
    ----------
    shards : list of int
        Shard indices to read, in order.
    stride : int
        1: keep every sample of these shards; otherwise keep the samples whose running position p (over all
        shards read, in order) satisfies ``p % stride == offset``.
    offset : int
        See stride.
    """

    shards: list[int]
    stride: int = 1
    offset: int = 0


def assign(entries: Sequence[ShardEntry], slot: Slot, order: np.ndarray) -> Assignment:
    """Assign shards (or, with fewer shards than slots, samples) of one ordering to one slot."""
    if len(entries) >= slot.count:
        return Assignment(shards=[int(index) for index in order[slot.index :: slot.count]])
    return Assignment(shards=[int(index) for index in order], stride=slot.count, offset=slot.index)


def assigned_samples(entries: Sequence[ShardEntry], assignment: Assignment) -> int:
    """Return the number of samples a slot keeps under `assignment` (from the manifest's counts)."""
    total = sum(entries[index].num_samples for index in assignment.shards)
    if assignment.stride == 1:
        return total
    return max(0, (total - assignment.offset + assignment.stride - 1) // assignment.stride)


def eval_batches_per_rank(entries: Sequence[ShardEntry], rank: int, world_size: int, workers: int, batch: int) -> int:
    """Return the number of evaluation batches one rank yields: every worker's samples, last batch partial."""
    order = shard_order(len(entries), 0, 0, shuffle=False)
    total = 0
    for worker in range(workers):
        samples = assigned_samples(entries, assign(entries, Slot(rank, world_size, worker, workers), order))
        total += math.ceil(samples / batch)
    return total


def train_batches_per_rank(entries: Sequence[ShardEntry], world_size: int, batch: int) -> int:
    """Return the full batches every rank yields per training epoch: num_samples // (world_size * batch)."""
    return sum(entry.num_samples for entry in entries) // (world_size * batch)


def worker_quota(batches_per_rank: int, worker: int, workers: int) -> int:
    """Return how many of its rank's training batches one worker yields."""
    return batches_per_rank // workers + int(worker < batches_per_rank % workers)


def iterate_tar(path: Path, reader: str = "lean") -> Iterator[dict[str, Any]]:
    """Yield the samples {"__key__", "json", "frames", ...} of one shard.

    Parameters
    ----------
    path : Path
        The shard.
    reader : str
        "lean" (data_pipeline.tar_reader: one read per member, the default) or "webdataset" (WebDataset's
        tarfile-based iterator; the same samples, slower on packed members).
    """
    if reader not in TAR_READERS:
        raise ValueError(f"tar reader {reader!r}; use one of {TAR_READERS}")
    try:
        if reader == "lean":
            yield from read_samples(path)
            return
        with open(path, "rb") as stream:
            members = (dict(member, __url__=str(path)) for member in tar_file_iterator(stream))
            yield from group_by_keys(members)
    except (OSError, ValueError) as error:  # TarFormatError is a ValueError
        raise ShardDataError(f"{path}: unreadable shard ({error}); run `make verify-shards` and rebuild it") from error


@dataclass
class SelectedSample:
    """A sample after frame selection: only the JPEG bytes it will decode, still compressed.

    Attributes
    ----------
    video_id, label : str, int
        From the sample's JSON.
    width, height : int
        Stored frame size.
    jpegs : list of bytes
        The unique frames to decode, in the order of ``plan.unique``.
    plan : FramePlan
        Unique frame indices and, per clip and rate, positions into `jpegs`.
    boxes : list
        The crop boxes (augment.CropBox), one in training.
    header_ok : bool or None
        Whether every JPEG's frame header reads and gives width x height, checked in the loader worker for the
        GPU backends (jpeg_header.headers_fit); None when not checked (the GPU decoders then check it).
    """

    video_id: str
    label: int
    width: int
    height: int
    jpegs: list[bytes]
    plan: FramePlan
    boxes: list = field(default_factory=list)
    header_ok: bool | None = None

    def compressed_bytes(self) -> int:
        """Return the bytes of JPEG data held."""
        return sum(len(jpeg) for jpeg in self.jpegs)


def parse_meta(raw: dict[str, Any], shard: Path) -> dict[str, Any]:
    """Decode and check a sample's JSON member; raise ShardDataError naming the shard on a malformed sample."""
    key = raw.get("__key__", "?")
    if "json" not in raw or "frames" not in raw:
        raise ShardDataError(f"{shard}: sample {key!r} lacks its .json or .frames member; rebuild this shard")
    meta = json.loads(raw["json"])
    missing = [name for name in REQUIRED_META_KEYS if name not in meta]
    if missing or len(meta["offsets"]) != meta["num_frames"] or meta["num_frames"] < 1:
        raise ShardDataError(f"{shard}: sample {key!r} has malformed metadata {missing or ''}; rebuild this shard")
    return meta


def slice_frames(packed: bytes, meta: dict[str, Any], indices: np.ndarray) -> list[bytes]:
    """Return the JPEG bytes of the given frame indices out of a packed ``.frames`` member."""
    view = memoryview(packed)
    return [
        bytes(view[meta["offsets"][index] : meta["offsets"][index] + meta["lengths"][index]]) for index in indices
    ]


class ShuffleBuffer:
    """A fixed-size buffer of compressed samples that yields a random one as each new one arrives."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = max(1, int(size))
        self.rng = rng
        self.items: list[Any] = []

    def push(self, item: Any) -> Any | None:
        """Add an item; once full, return a randomly chosen item (removed), else None."""
        self.items.append(item)
        if len(self.items) < self.size:
            return None
        chosen = int(self.rng.integers(len(self.items)))
        self.items[chosen], self.items[-1] = self.items[-1], self.items[chosen]
        return self.items.pop()

    def drain(self) -> Iterator[Any]:
        """Yield the remaining items in random order."""
        self.rng.shuffle(self.items)
        while self.items:
            yield self.items.pop()


def read_assigned(
    entries: Sequence[ShardEntry], assignment: Assignment, reader: str = "lean"
) -> Iterator[tuple[dict[str, Any], Path]]:
    """Yield (raw sample, shard path) for the samples a slot keeps, reading only its shards (see `iterate_tar`)."""
    position = 0
    for shard_index in assignment.shards:
        path = entries[shard_index].path
        if assignment.stride > 1:
            count = entries[shard_index].num_samples
            first_kept = (assignment.offset - position) % assignment.stride
            position += count
            if first_kept >= count:
                continue
            for local, raw in enumerate(iterate_tar(path, reader)):
                if local % assignment.stride == first_kept:
                    yield raw, path
            continue
        for raw in iterate_tar(path, reader):
            yield raw, path
