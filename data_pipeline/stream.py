"""Streaming of packed JPEG-frame shards: manifest, split across ranks and workers, per-epoch order, shuffle buffer.

Work is split over ``slots = world_size x workers`` (slot = rank * workers + worker).

Training (exact epochs): each rank yields exactly ``Q = num_samples // (world_size * batch_size)`` full batches
per epoch (the manifest's counts), split over its workers (`worker_quota`). The epoch's sequence of samples is
the shards in a per-epoch shuffled order, rotated by a per-epoch random offset; rank r takes the r-th of
world_size near-equal contiguous runs of it, keeps its first ``Q x batch_size`` samples (the rest, at most
batch_size per rank and fewer than world_size x batch_size in all, are left out of this epoch:
`train_dropped_per_rank`) and cuts them into one contiguous run per worker, exactly that worker's quota of
samples (`train_pieces`). Every worker reads only the shards its run touches (the ends of a boundary shard are
skipped, not read) and passes exactly its run through the shuffle buffer, which is drained at the end: every
video is yielded once per epoch except those few left out, whatever the buffer size, worker count or rank count.
The seed is shared by every worker, so the runs are disjoint.

Evaluation: with at least as many shards as slots, shards are dealt round-robin; with fewer, every slot reads
every shard and keeps the samples whose position is congruent to its slot. Every sample exactly once, no repeat,
no padding; each worker's last batch may be smaller.

Frame selection happens as a sample is read (the sampled JPEG bytes are sliced out of the packed member), so the
shuffle buffer holds only the compressed frames a sample will decode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_iterator  # at import: not once per forked worker

from data_pipeline.sampling import FramePlan
from data_pipeline.tar_reader import read_samples
from shard_format import ManifestError, MalformedSampleError, manifest_path, read_manifest, read_sample_meta

SHARD_ORDER_STREAM = 0x5A4D  # separates the shard-order random stream from the per-worker one
EPOCH_OFFSET_STREAM = 0x0FF5  # the random stream of the epoch's rotation of the sample sequence
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


@dataclass(frozen=True)
class SamplePiece:
    """A contiguous run of samples of one shard: samples first .. first + count - 1 (in the shard's order)."""

    shard: int
    first: int
    count: int


def epoch_offset(num_samples: int, seed: int, epoch: int) -> int:
    """Return the epoch's rotation of the training sample sequence, identical in every worker of every rank."""
    if num_samples == 0:
        return 0
    return int(np.random.default_rng([seed, epoch, EPOCH_OFFSET_STREAM]).integers(num_samples))


def rank_span(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """Return [start, stop) of a rank's near-equal run of the epoch's (rotated) training sequence."""
    return rank * num_samples // world_size, (rank + 1) * num_samples // world_size


def train_dropped_per_rank(entries: Sequence[ShardEntry], rank: int, world_size: int, batch: int) -> int:
    """Return the samples of a rank's run left out of each epoch so every rank yields the same full batches."""
    start, stop = rank_span(sum(entry.num_samples for entry in entries), rank, world_size)
    return stop - start - train_batches_per_rank(entries, world_size, batch) * batch


def _pieces_of_interval(entries: Sequence[ShardEntry], order: np.ndarray, start: int, stop: int) -> list[SamplePiece]:
    """Map [start, stop) of the sequence "shards in `order`, each in its own sample order" to shard pieces."""
    pieces, position = [], 0
    for shard in order:
        count = entries[int(shard)].num_samples
        first, last = max(start, position), min(stop, position + count)
        if first < last:
            pieces.append(SamplePiece(int(shard), first - position, last - first))
        position += count
        if position >= stop:
            break
    return pieces


def train_pieces(
    entries: Sequence[ShardEntry], slot: Slot, batch: int, batches_per_rank: int, seed: int, epoch: int
) -> list[SamplePiece]:
    """Return the shard pieces one slot reads in a training epoch: exactly its quota of batches' samples.

    The pieces of all slots are disjoint; together they hold every sample of the split except
    `train_dropped_per_rank` per rank (see the module docstring).
    """
    total = sum(entry.num_samples for entry in entries)
    order = shard_order(len(entries), seed, epoch, shuffle=True)
    rank_start, _ = rank_span(total, slot.rank, slot.world_size)
    before = sum(worker_quota(batches_per_rank, worker, slot.num_workers) for worker in range(slot.worker))
    start = rank_start + before * batch
    stop = start + worker_quota(batches_per_rank, slot.worker, slot.num_workers) * batch
    offset = epoch_offset(total, seed, epoch)
    first, last = start + offset, stop + offset
    if last <= total:
        return _pieces_of_interval(entries, order, first, last)
    if first >= total:
        return _pieces_of_interval(entries, order, first - total, last - total)
    return _pieces_of_interval(entries, order, first, total) + _pieces_of_interval(entries, order, 0, last - total)


def iterate_tar(path: Path, reader: str = "lean", first: int = 0, count: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield the samples {"__key__", "json", "frames", ...} of one shard.

    Parameters
    ----------
    path : Path
        The shard.
    reader : str
        "lean" (data_pipeline.tar_reader: one read per member, the default) or "webdataset" (WebDataset's
        tarfile-based iterator; the same samples, slower on packed members).
    first, count : int
        Only samples first .. first + count - 1 (all from `first` when count is None). The lean reader seeks past
        the samples before and stops after the last; WebDataset's reads and discards them.
    """
    if reader not in TAR_READERS:
        raise ValueError(f"tar reader {reader!r}; use one of {TAR_READERS}")
    try:
        if reader == "lean":
            yield from read_samples(path, first, count)
            return
        with open(path, "rb") as stream:
            members = (dict(member, __url__=str(path)) for member in tar_file_iterator(stream))
            stop = None if count is None else first + count
            yield from itertools.islice(group_by_keys(members), first, stop)
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
    augment_seeds : tuple of int or None
        One seed per view for the clip augmentation (data_pipeline.clip_augment), drawn in the worker when it is
        on; None otherwise.
    """

    video_id: str
    label: int
    width: int
    height: int
    jpegs: list[bytes]
    plan: FramePlan
    boxes: list = field(default_factory=list)
    header_ok: bool | None = None
    augment_seeds: tuple[int, ...] | None = None

    def compressed_bytes(self) -> int:
        """Return the bytes of JPEG data held."""
        return sum(len(jpeg) for jpeg in self.jpegs)


def parse_meta(raw: dict[str, Any], shard: Path) -> dict[str, Any]:
    """Decode and check a sample's JSON member; raise ShardDataError naming the shard on a malformed sample."""
    try:
        return read_sample_meta(raw)
    except MalformedSampleError as error:
        raise ShardDataError(f"{shard}: {error}; rebuild this shard") from error


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


def read_pieces(
    entries: Sequence[ShardEntry], pieces: Sequence[SamplePiece], reader: str = "lean"
) -> Iterator[tuple[dict[str, Any], Path]]:
    """Yield (raw sample, shard path) for every sample of `pieces`, reading only those samples.

    Raises
    ------
    ShardDataError
        If a shard holds fewer samples than its manifest lists (the epoch would come up short).
    """
    for piece in pieces:
        path = entries[piece.shard].path
        read = 0
        for raw in iterate_tar(path, reader, piece.first, piece.count):
            read += 1
            yield raw, path
        if read < piece.count:
            raise ShardDataError(
                f"{path}: holds fewer samples than the {entries[piece.shard].num_samples} its manifest lists; "
                "run `make verify-shards` and rebuild it"
            )
