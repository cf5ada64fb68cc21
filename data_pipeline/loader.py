"""build_loader: the one entry point train.py and evaluate.py use (see README, section data_pipeline).

Loader workers (torch DataLoader over an IterableDataset) read their shards, sample frame indices and crop boxes,
slice out the sampled JPEG bytes, shuffle compressed samples and cut batches. The cpu backend also decodes, crops
and resizes in the workers into a uint8 batch (a quarter of the bytes of float; pinned when CUDA is available),
which the main process moves to the training device and normalises there (augment.normalise_views). For the GPU
backends (torchvision, dali) the workers also check every kept JPEG's header (jpeg_header), and the compressed
batch is decoded on the device in the main process, by a background thread on its own CUDA stream that runs
`prefetch` batches ahead (data_pipeline.prefetch).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_pipeline.augment import choose_boxes, normalisation_tensors, normalise_views
from data_pipeline.decode import DaliDecoder, TorchvisionDecoder, choose_backend, decode_batch
from data_pipeline.host_memory import keep_freed_memory as keep_freed_host_memory
from data_pipeline.jpeg_header import headers_fit
from data_pipeline.prefetch import DEFAULT_PREFETCH, prefetch_outputs
from data_pipeline.sampling import check_sampling, check_short_video, plan_frames
from data_pipeline.stream import (
    SelectedSample,
    ShardEntry,
    TAR_READERS,
    ShuffleBuffer,
    Slot,
    assign,
    eval_batches_per_rank,
    parse_meta,
    read_assigned,
    read_pieces,
    read_split,
    shard_order,
    slice_frames,
    train_batches_per_rank,
    train_dropped_per_rank,
    train_pieces,
    worker_quota,
)

LOGGER = logging.getLogger(__name__)
DEFAULT_SHUFFLE_BUFFER = 256
WORKER_TORCH_THREADS = 1
WORKER_STREAM = 0xF7A  # separates each worker's sampling/crop/shuffle random stream from the shard order
STATS_KEYS = (
    "samples", "batches", "corrupt_videos_replaced", "frames_decoded", "compressed_bytes", "dropped_for_equal_batches"
)


@dataclass
class PipelineConfig:
    """Everything a worker needs to turn shards into batches (picklable, sent to every worker)."""

    rates: tuple[int, ...]
    batch_size: int
    train: bool
    decode_in_worker: bool
    seed: int = 0
    epoch: int = 0
    sampling: str = "independent"
    short_video: str = "official"
    crop_size: int = 224
    test_resize: int | None = None
    multi_scale: bool = True
    flip: bool = False
    test_crops: int = 1
    test_clips: int = 1
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    rank: int = 0
    world_size: int = 1
    num_workers: int = 1
    batches_per_rank: int = 0
    tar_reader: str = "lean"


def select_sample(raw: dict[str, Any], shard: Path, config: PipelineConfig, rng: np.random.Generator) -> SelectedSample:
    """Parse a raw sample, sample its frame indices and crop boxes, and keep only the needed JPEG bytes.

    For the GPU backends (config.decode_in_worker False) every kept JPEG's header is checked here, in the worker,
    and the verdict stored as `header_ok`, so the main process never parses headers.
    """
    meta = parse_meta(raw, shard)
    plan = plan_frames(
        int(meta["num_frames"]), config.rates, config.train, rng, config.sampling, config.short_video, config.test_clips
    )
    boxes = choose_boxes(
        int(meta["width"]), int(meta["height"]), config.train, config.crop_size, config.test_resize, rng,
        config.multi_scale, config.flip, config.test_crops,
    )
    width, height = int(meta["width"]), int(meta["height"])
    jpegs = slice_frames(raw["frames"], meta, plan.unique)
    return SelectedSample(
        video_id=str(meta["id"]), label=int(meta["label"]), width=width, height=height, jpegs=jpegs, plan=plan,
        boxes=boxes, header_ok=None if config.decode_in_worker else headers_fit(jpegs, width, height),
    )


class ShardVideoDataset(IterableDataset):
    """Iterable over batches of one rank: each worker yields (batch, stats) for its share of the work."""

    def __init__(self, entries: Sequence[ShardEntry], config: PipelineConfig) -> None:
        super().__init__()
        self.entries = list(entries)
        self.config = config

    def _slot(self) -> Slot:
        """This worker's slot."""
        info = get_worker_info()
        worker = info.id if info is not None else 0
        return Slot(self.config.rank, self.config.world_size, worker, self.config.num_workers)

    def _selected(self, slot: Slot, rng: np.random.Generator) -> Iterator[SelectedSample]:
        """Yield this slot's samples, frames selected: training, its exact share of the epoch; evaluation, all."""
        if self.config.train:
            pieces = train_pieces(
                self.entries, slot, self.config.batch_size, self.config.batches_per_rank, self.config.seed,
                self.config.epoch,
            )  # fmt: skip
            samples = read_pieces(self.entries, pieces, self.config.tar_reader)
        else:
            order = shard_order(len(self.entries), self.config.seed, self.config.epoch, shuffle=False)
            samples = read_assigned(self.entries, assign(self.entries, slot, order), self.config.tar_reader)
        for raw, shard in samples:
            yield select_sample(raw, shard, self.config, rng)

    def _shuffled(self, samples: Iterator[SelectedSample], rng: np.random.Generator) -> Iterator[SelectedSample]:
        """Pass samples through the compressed shuffle buffer (training only)."""
        if not self.config.train:
            yield from samples
            return
        buffer = ShuffleBuffer(self.config.shuffle_buffer, rng)
        for sample in samples:
            chosen = buffer.push(sample)
            if chosen is not None:
                yield chosen
        yield from buffer.drain()

    def _groups(self, slot: Slot, rng: np.random.Generator) -> Iterator[list[SelectedSample]]:
        """Cut batches: the worker's exact quota of full batches in training, all samples once in evaluation."""
        quota = worker_quota(self.config.batches_per_rank, slot.worker, slot.num_workers) if self.config.train else None
        if quota == 0:
            return
        group: list[SelectedSample] = []
        produced = 0
        for sample in self._shuffled(self._selected(slot, rng), rng):
            group.append(sample)
            if len(group) == self.config.batch_size:
                yield group
                group, produced = [], produced + 1
                if quota is not None and produced >= quota:
                    return
        if group and not self.config.train:
            yield group

    def __iter__(self) -> Iterator[tuple[Any, dict[str, int]]]:
        """Yield (batch, stats delta); the batch is decoded (cpu backend) or a list of SelectedSample."""
        slot = self._slot()
        if get_worker_info() is not None:
            torch.set_num_threads(WORKER_TORCH_THREADS)
        rng = np.random.default_rng([self.config.seed, self.config.epoch, slot.index, WORKER_STREAM])
        mean, std = normalisation_tensors()
        fallback = None
        for group in self._groups(slot, rng):
            stats = {
                "samples": len(group), "batches": 1, "corrupt_videos_replaced": 0,
                "frames_decoded": sum(len(sample.jpegs) for sample in group),
                "compressed_bytes": sum(sample.compressed_bytes() for sample in group),
            }  # fmt: skip
            if not self.config.decode_in_worker:
                yield group, stats
                continue
            batch, replaced = decode_batch(group, mean, std, fallback, normalise=False)
            stats["corrupt_videos_replaced"] = replaced
            fallback = next((sample for sample in group if sample.video_id in batch["id"]), fallback)
            yield batch, stats


def worker_start_method() -> str | None:
    """Return "fork" on Linux (cheap worker start even inside processes started by spawn), else the default.

    Workers never touch CUDA, so forking a process that has initialised CUDA is safe; torchrun's ranks fork their
    workers the same way.
    """
    return "fork" if sys.platform.startswith("linux") else None


def distributed_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Return (rank, world_size): the given values, else torch.distributed's when initialised, else (0, 1)."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if world_size is None:
        world_size = torch.distributed.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


@dataclass
class VideoLoader:
    """Iterable over one rank's batches of an epoch; `set_epoch` reseeds order, sampling and crops.

    Use `build_loader` to make one. With a GPU decoder and `prefetch` > 0, a background thread decodes up to
    `prefetch` batches ahead on its own CUDA stream (data_pipeline.prefetch) while the caller trains.
    """

    entries: list[ShardEntry]
    config: PipelineConfig
    backend: str
    device: torch.device
    num_workers: int
    pin_memory: bool
    decoder: Any = None
    prefetch: int = 0
    totals: dict[str, int] = field(default_factory=lambda: {key: 0 for key in STATS_KEYS})
    keep_freed_memory: bool = True
    normalisation: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: all workers of all ranks derive shard order, shuffle, sampling and crops from it."""
        self.config = replace(self.config, epoch=int(epoch))

    def __len__(self) -> int:
        """Batches per epoch on this rank (exact; in evaluation each worker's last batch may be partial)."""
        if self.config.train:
            return self.config.batches_per_rank
        return eval_batches_per_rank(
            self.entries, self.config.rank, self.config.world_size, self.config.num_workers, self.config.batch_size
        )

    @property
    def num_samples(self) -> int:
        """Videos in the split (all ranks)."""
        return sum(entry.num_samples for entry in self.entries)

    def _data_loader(self) -> DataLoader:
        """A fresh DataLoader for the current epoch."""
        return DataLoader(
            ShardVideoDataset(self.entries, self.config),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            multiprocessing_context=worker_start_method() if self.num_workers > 0 else None,
        )

    def _items(self) -> Iterator[tuple[Any, dict[str, int]]]:
        """The DataLoader's (item, stats delta) pairs of the current epoch."""
        yield from self._data_loader()

    def _finish(self, pair: tuple[Any, dict[str, int]]) -> tuple[dict[str, Any], dict[str, int]]:
        """Decode on the GPU (GPU backends), or move the cpu backend's uint8 batch to the device and normalise it.

        Returns the batch and its stats delta, with the corrupt videos the GPU decoder replaced added.
        """
        item, stats = pair
        if self.decoder is not None:
            batch, replaced = self.decoder.decode_batch(item)
            return batch, dict(stats, corrupt_videos_replaced=stats["corrupt_videos_replaced"] + replaced)
        if self.normalisation is None:
            self.normalisation = normalisation_tensors(self.device)
        mean, std = self.normalisation
        item["frames"] = {
            rate: normalise_views(frames.to(self.device, non_blocking=True), mean, std)
            for rate, frames in item["frames"].items()
        }
        return item, stats

    @property
    def dropped_per_epoch(self) -> int:
        """Videos of this rank's share left out of each training epoch so all ranks yield equal full batches.

        At most batch_size per rank, fewer than world_size x batch_size over all ranks (0 in evaluation, which
        yields every video once).
        """
        if not self.config.train:
            return 0
        return train_dropped_per_rank(self.entries, self.config.rank, self.config.world_size, self.config.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this rank's batches of the current epoch (stats count a batch when it is yielded)."""
        if self.keep_freed_memory:
            keep_freed_host_memory()
        if self.decoder is None or self.prefetch < 1:
            for batch, stats in map(self._finish, self._items()):
                self._count(stats)
                yield batch
        else:
            finished = prefetch_outputs(self._items(), self._finish, self.device, self.prefetch)
            try:
                for batch, stats in finished:
                    self._count(stats)
                    yield batch
            finally:
                finished.close()  # stops and joins the decode thread at once when the caller stops early
        self.totals["dropped_for_equal_batches"] += self.dropped_per_epoch

    def _count(self, stats: dict[str, int]) -> None:
        """Add one batch's stats delta to the totals."""
        for key, value in stats.items():
            self.totals[key] += int(value)

    def stats(self) -> dict[str, Any]:
        """Counters since the loader was built: samples, batches, corrupt videos replaced, frames decoded, bytes.

        "dropped_for_equal_batches" counts, per finished training epoch, the videos of this rank's share that no
        batch held (`dropped_per_epoch`); every other video of the split was yielded exactly once in the epoch.
        """
        return dict(self.totals, backend=self.backend, rank=self.config.rank, world_size=self.config.world_size)


def _check_options(rates: Sequence[int], batch_size: int, sampling: str, short_video: str, crop_size: int) -> None:
    """Raise ValueError with the fix for invalid options."""
    if not rates or any(int(rate) < 1 for rate in rates):
        raise ValueError(f"rates={tuple(rates)}; pass positive frame counts, e.g. (4, 8, 16)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use at least 1")
    check_sampling(sampling)
    check_short_video(short_video)
    if crop_size < 1:
        raise ValueError(f"crop_size={crop_size}; use a positive size")


def build_loader(
    shards: str | Path,
    split: str = "train",
    rates: Sequence[int] = (4, 8, 16),
    batch_size: int = 8,
    train: bool = True,
    decode: str = "auto",
    device: torch.device | str | None = None,
    num_workers: int = 4,
    seed: int = 0,
    sampling: str = "independent",
    short_video: str = "official",
    crop_size: int = 224,
    test_resize: int | None = None,
    multi_scale: bool = True,
    flip: bool = False,
    test_crops: int = 1,
    test_clips: int = 1,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    rank: int | None = None,
    world_size: int | None = None,
    prefetch: int | None = None,
    tar_reader: str = "lean",
    keep_freed_memory: bool = True,
) -> VideoLoader:
    """Build the streaming multi-rate video loader of one rank.

    Parameters
    ----------
    shards : str or Path
        Folder holding ``<split>.manifest.json`` and its tars.
    split : str
        "train", "validation" or "test".
    rates : sequence of int
        Frame counts per video (one for vanilla TSM).
    batch_size : int
        Videos per batch on this rank.
    train : bool
        Training (shuffle, augmentation, equal full batches on every rank) or evaluation (every video once).
    decode : str
        "auto", "dali", "torchvision" or "cpu".
    device : torch.device or str, optional
        Training device (default: model.device.get_device() rules: CUDA, MPS, CPU).
    num_workers : int
        DataLoader workers per rank (0: in the main process).
    seed : int
        Base seed; with the epoch it fixes shard order, shuffle, sampling and crops.
    sampling, short_video : str
        See data_pipeline.sampling.
    crop_size, test_resize, multi_scale, flip, test_crops, test_clips
        See data_pipeline.augment.choose_boxes and sampling.plan_frames.
    shuffle_buffer : int
        Compressed samples held per worker for shuffling (training).
    rank, world_size : int, optional
        Default from torch.distributed when initialised, else 0 and 1.
    prefetch : int, optional
        GPU backends: batches decoded ahead in a background thread on a side CUDA stream, overlapping decode with
        training (default data_pipeline.prefetch.DEFAULT_PREFETCH; 0: decode in the caller's thread). Ignored by
        the cpu backend (its workers already run ahead).
    tar_reader : str
        "lean" (data_pipeline.tar_reader, the default) or "webdataset" (WebDataset's tarfile-based iterator; the
        same samples, slower; a fallback should a shard written by another tool trip the lean reader).
    keep_freed_memory : bool
        Let malloc keep freed batch-sized blocks of this process for reuse (data_pipeline.host_memory; glibc
        only), set when iteration starts: the float batches (and, on the CPU, the training step's own large
        tensors) then reuse warm pages instead of faulting in fresh ones; the process keeps its peak heap.

    Returns
    -------
    VideoLoader
        Iterable of {"frames": {T: float (B*V, T, 3, S, S)}, "label": long (B,), "id": list, "views": V}.
    """
    _check_options(rates, batch_size, sampling, short_video, crop_size)
    check_short_video(short_video, train)
    if tar_reader not in TAR_READERS:
        raise ValueError(f"tar_reader={tar_reader!r}; use one of {TAR_READERS}")
    if prefetch is not None and prefetch < 0:
        raise ValueError(f"prefetch={prefetch}; use 0 (off) or a positive queue depth")
    if device is None:
        from model.device import get_device

        device = get_device()
    device = torch.device(device)
    backend = choose_backend(decode, device)
    rank, world_size = distributed_defaults(rank, world_size)
    entries = read_split(shards, split)
    workers = max(1, num_workers)
    config = PipelineConfig(
        rates=tuple(int(rate) for rate in rates), batch_size=int(batch_size), train=bool(train),
        decode_in_worker=backend == "cpu", seed=int(seed), sampling=sampling, short_video=short_video,
        crop_size=int(crop_size), test_resize=test_resize, multi_scale=multi_scale, flip=flip,
        test_crops=1 if train else int(test_crops), test_clips=1 if train else int(test_clips),
        shuffle_buffer=int(shuffle_buffer), rank=rank, world_size=world_size, num_workers=workers,
        batches_per_rank=train_batches_per_rank(entries, world_size, int(batch_size)) if train else 0,
        tar_reader=tar_reader,
    )  # fmt: skip
    if train and config.batches_per_rank == 0:
        raise ValueError(
            f"{shards}: {sum(e.num_samples for e in entries)} {split} videos give no full batch of {batch_size} on "
            f"each of {world_size} ranks; lower batch_size"
        )
    if not train and len(entries) < world_size * workers:
        LOGGER.warning(
            "%s: %d %s shards for %d ranks x %d workers: every evaluation worker reads every shard and keeps its "
            "share of the samples (more I/O); write at least %d shards",
            shards, len(entries), split, world_size, workers, world_size * workers,
        )  # fmt: skip
    decoder = None
    if backend == "torchvision":
        decoder = TorchvisionDecoder(device)
    elif backend == "dali":
        views = config.test_crops * config.test_clips
        decoder = DaliDecoder(device, max_frames=config.batch_size * views * sum(config.rates))
    pin = backend == "cpu" and torch.cuda.is_available()
    depth = 0 if decoder is None else DEFAULT_PREFETCH if prefetch is None else int(prefetch)
    return VideoLoader(
        entries, config, backend, device, int(num_workers), pin, decoder, depth, keep_freed_memory=keep_freed_memory
    )
