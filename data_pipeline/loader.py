"""build_loader: the one entry point train.py and evaluate.py use; `PipelineConfig` (data_pipeline.options) defines
its options once.

Loader workers (torch DataLoader over an IterableDataset) read their shards, sample frame indices and crop boxes,
slice out the sampled JPEG bytes, shuffle compressed samples and cut batches. What decodes them is the loader's
`Decoder` (data_pipeline.decode). An in-worker decoder (cpu) decodes, crops and resizes in the workers into a
uint8 batch (a quarter of the bytes of float; pinned when CUDA is available). A main-process decoder
(torchvision, dali) gets the compressed batch, with every kept JPEG's header checked in the workers
(jpeg_header), and decodes it on the device in a background thread on its own CUDA stream that runs `prefetch`
batches ahead (data_pipeline.prefetch).

Batch contract: every batch the loader yields has its videos and labels on the loader's device
(`VideoLoader.device`), the videos float, normalised with the model's mean and std (`PipelineConfig.normalisation`,
ImageNet's by default) and in its channel order; uint8 pixels from the workers are moved and normalised there
(augment.normalise_views). The caller needs no `.to(device)` of its own.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_pipeline.augment import (
    IMAGENET_NORMALISATION,
    Normalisation,
    choose_boxes,
    normalisation_tensors,
    normalise_views,
)
from data_pipeline.clip_augment import AUGMENT_SEED_BOUND, ClipRandAugment, augment_batch_views
from data_pipeline.decode import Decoder, choose_backend, make_decoder
from data_pipeline.host_memory import keep_freed_memory as keep_freed_host_memory
from data_pipeline.jpeg_header import headers_fit
from data_pipeline.options import LOADER_OPTIONS, PipelineConfig
from data_pipeline.prefetch import DEFAULT_PREFETCH, prefetch_outputs
from data_pipeline.sampling import plan_frames
from data_pipeline.stream import (
    SelectedSample,
    ShardEntry,
    ShuffleBuffer,
    Slot,
    assign,
    eval_batches_per_rank,
    parse_meta,
    read_assigned,
    read_pieces,
    read_split,
    shard_order,
    train_batches_per_rank,
    train_dropped_per_rank,
    train_pieces,
    worker_quota,
)
from shard_format import slice_frames

LOGGER = logging.getLogger(__name__)
WORKER_TORCH_THREADS = 1
WORKER_STREAM = 0xF7A  # separates each worker's sampling/crop/shuffle random stream from the shard order
STATS_KEYS = (
    "samples", "batches", "corrupt_videos_replaced", "frames_decoded", "compressed_bytes", "dropped_for_equal_batches"
)


@dataclass(frozen=True)
class EpochPlan:
    """What the loader decides for one pass over a split (not options): every worker gets it.

    Attributes
    ----------
    epoch : int
        The epoch (`VideoLoader.set_epoch`): with the seed it fixes shard order, shuffle, sampling and crops.
    batches_per_rank : int
        Training: the exact full batches each rank yields this epoch (0 in evaluation).
    start_batch : int
        Training: the pass starts at this batch of the rank's epoch (a run resumed in the middle of an epoch);
        the batches before it are cut from the same videos, frames and crops but neither decoded nor yielded.
    """

    epoch: int = 0
    batches_per_rank: int = 0
    start_batch: int = 0


def batches_to_skip(start_batch: int, worker: int, workers: int) -> int:
    """Return how many of its batches one worker slot leaves out so that its rank's pass starts at `start_batch`.

    Batch j of a rank's training epoch comes from slot j % workers: the DataLoader takes the workers' batches in
    turn, and the slots' quotas differ by at most one, the larger ones first (stream.worker_quota).
    """
    if start_batch <= worker:
        return 0
    return (start_batch - worker + workers - 1) // workers


def select_sample(raw: dict[str, Any], shard: Path, config: PipelineConfig, rng: np.random.Generator,
                  check_headers: bool = False) -> SelectedSample:
    """Parse a raw sample, sample its frame indices and crop boxes, and keep only the needed JPEG bytes.

    For a main-process decoder (`check_headers`) every kept JPEG's header is checked here, in the worker, and the
    verdict stored as `header_ok`, so the main process never parses headers.
    """
    meta = parse_meta(raw, shard)
    return select_frames(
        str(meta["id"]), int(meta["label"]), int(meta["num_frames"]), int(meta["width"]), int(meta["height"]),
        lambda indices: slice_frames(raw["frames"], meta, indices), config, rng, check_headers,
    )  # fmt: skip


def select_frames(
    video_id: str, label: int, num_frames: int, width: int, height: int,
    frame_bytes: Callable[[np.ndarray], list[bytes]], config: PipelineConfig, rng: np.random.Generator,
    check_headers: bool = False,
) -> SelectedSample:
    """Sample one video's frame indices and crop boxes (in that order) and keep the JPEG bytes of those frames.

    Draw order (the training random stream): frame indices, crop boxes (one per view), then, with RandAugment
    on, one augmentation seed per view.

    Parameters
    ----------
    video_id, label : str, int
        Carried into the batch.
    num_frames, width, height : int
        The stored video: frame count and frame size.
    frame_bytes : callable
        Returns the JPEG bytes of the given frame indices.
    config : PipelineConfig
        The sampling and crop options.
    rng : numpy.random.Generator
        Training randomness (evaluation draws nothing).
    check_headers : bool
        Check every kept JPEG's header here (for a main-process decoder).
    """  # fmt: skip
    plan = plan_frames(
        num_frames, config.frames, config.train, rng, config.sampling, config.short_video, config.test_clips
    )
    boxes = choose_boxes(
        width, height, config.train, config.crop_size, config.test_resize, rng, config.multi_scale, config.flip,
        config.test_crops, train_crop=config.train_crop, jitter_range=config.jitter_range,
        train_views=config.train_views, test_crop_size=config.test_crop_size, test_crop_layout=config.test_crop_layout,
    )
    augment_seeds = None
    if config.train and config.rand_augment:
        augment_seeds = tuple(int(seed) for seed in rng.integers(0, AUGMENT_SEED_BOUND, size=len(boxes)))
    jpegs = frame_bytes(plan.unique)
    return SelectedSample(
        video_id=video_id, label=label, width=width, height=height, jpegs=jpegs, plan=plan, boxes=boxes,
        header_ok=headers_fit(jpegs, width, height) if check_headers else None, augment_seeds=augment_seeds,
    )


def decode_one_video(
    jpegs: Sequence[bytes], width: int, height: int, config: PipelineConfig, decoder: Decoder, video_id: str = "video"
) -> dict[str, Any]:
    """The evaluation batch of one video held in memory (all its JPEG frames), exactly as the loader makes it.

    The same frame sampling, crop boxes, decoder and normalisation as a batch of one from the shards, for a video
    that never was in a shard (predict.py). Frames arrive on `config.device`, float and normalised.

    Raises
    ------
    ValueError
        If the video has no frame, or a frame does not decode (data_pipeline.decode.CorruptFrameError).
    """
    if not jpegs:
        raise ValueError(f"video {video_id!r} has no frame")
    sample = select_frames(
        video_id, -1, len(jpegs), int(width), int(height), lambda indices: [jpegs[index] for index in indices],
        config, np.random.default_rng([config.seed, 0, 0, WORKER_STREAM]), check_headers=not decoder.in_worker,
    )  # fmt: skip
    batch, _ = decoder.decode([sample])
    return batch_on_device(batch, resolve_device(config.device), config.normalisation)


class ShardVideoDataset(IterableDataset):
    """Iterable over batches of one rank: each worker yields (batch, stats) for its share of the work.

    Parameters
    ----------
    entries : sequence of ShardEntry
        The split's shards.
    config : PipelineConfig
        The loader's options.
    plan : EpochPlan
        The epoch and the exact training batches per rank.
    decoder : Decoder, optional
        An in-worker decoder: each batch is decoded in the worker. None: the worker yields the selected samples
        (JPEG headers checked) for a main-process decoder.
    """

    def __init__(self, entries: Sequence[ShardEntry], config: PipelineConfig, plan: EpochPlan,
                 decoder: Decoder | None = None) -> None:
        super().__init__()
        if decoder is not None and not decoder.in_worker:
            raise ValueError(f"the {decoder.name} decoder runs in the main process, not in the loader workers")
        self.entries = list(entries)
        self.config = config
        self.plan = plan
        self.decoder = decoder

    def _slot(self) -> Slot:
        """This worker's slot.

        The DataLoader takes its workers' batches in turn from its worker 0, and batch j of a rank's training
        epoch belongs to slot j % slots; a pass starting at batch k therefore gives DataLoader worker i the slot
        (i + k) % slots, so that the turns begin with the slot of batch k.
        """
        info = get_worker_info()
        worker = info.id if info is not None else 0
        slots = self.config.worker_slots
        if self.config.train:
            worker = (worker + self.plan.start_batch) % slots
        return Slot(self.config.rank, self.config.world_size, worker, slots)

    def _selected(self, slot: Slot, rng: np.random.Generator) -> Iterator[SelectedSample]:
        """Yield this slot's samples, frames selected: training, its exact share of the epoch; evaluation, all."""
        if self.config.train:
            pieces = train_pieces(
                self.entries, slot, self.config.batch_size, self.plan.batches_per_rank, self.config.seed,
                self.plan.epoch,
            )  # fmt: skip
            samples = read_pieces(self.entries, pieces, self.config.tar_reader)
        else:
            order = shard_order(len(self.entries), self.config.seed, self.plan.epoch, shuffle=False)
            samples = read_assigned(self.entries, assign(self.entries, slot, order), self.config.tar_reader)
        for raw, shard in samples:
            yield select_sample(raw, shard, self.config, rng, check_headers=self.decoder is None)

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
        quota = worker_quota(self.plan.batches_per_rank, slot.worker, slot.num_workers) if self.config.train else None
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
        """Yield (batch, stats delta); the batch is decoded (in-worker decoder) or a list of SelectedSample."""
        slot = self._slot()
        if get_worker_info() is not None:
            torch.set_num_threads(WORKER_TORCH_THREADS)
        rng = np.random.default_rng([self.config.seed, self.plan.epoch, slot.index, WORKER_STREAM])
        decoder = copy.copy(self.decoder)  # each pass starts without a previous pass's fallback video
        augment = clip_rand_augment(self.config)
        skip = batches_to_skip(self.plan.start_batch, slot.worker, slot.num_workers) if self.config.train else 0
        for index, group in enumerate(self._groups(slot, rng)):
            if index < skip:
                continue  # cut (its random draws made) but not decoded: the pass resumes after it
            stats = {
                "samples": len(group), "batches": 1, "corrupt_videos_replaced": 0,
                "frames_decoded": sum(len(sample.jpegs) for sample in group),
                "compressed_bytes": sum(sample.compressed_bytes() for sample in group),
            }  # fmt: skip
            if decoder is None:
                yield group, stats
                continue
            batch, stats["corrupt_videos_replaced"] = decoder.decode(group)
            if augment is not None:
                augment_batch_views(batch, augment, self.config.normalisation)
            yield batch, stats


def clip_rand_augment(config: PipelineConfig) -> ClipRandAugment | None:
    """The RandAugment of the training views (None when off or in evaluation)."""
    if not (config.train and config.rand_augment):
        return None
    return ClipRandAugment(config.rand_augment, config.crop_size)


def batch_on_device(
    batch: dict[str, Any], device: torch.device, normalisation: Normalisation = IMAGENET_NORMALISATION,
    tensors: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Bring a decoded batch's videos and labels onto `device`, uint8 pixels normalised there, channels in the
    model's order.

    The loader's last step for every decoder, and the one place a batch moves to its device: any
    `Decoder.decode` output becomes the float, normalised batch on the device (a no-op move where it is there
    already); a BGR model's channels are reversed here. The batch is updated in place and returned. `tensors` is
    augment.normalisation_tensors(device, normalisation), made when omitted.
    """
    pixels = holds_pixels(batch)
    videos_by_frames = {frames: videos.to(device, non_blocking=True) for frames, videos in batch["videos"].items()}
    if pixels:
        mean, std = tensors if tensors is not None else normalisation_tensors(device, normalisation)
        videos_by_frames = {frames: normalise_views(videos, mean, std) for frames, videos in videos_by_frames.items()}
    if normalisation.reversed_channels:
        videos_by_frames = {frames: videos.flip(2) for frames, videos in videos_by_frames.items()}
    batch["videos"] = videos_by_frames
    batch["label"] = batch["label"].to(device, non_blocking=True)
    return batch


def holds_pixels(batch: dict[str, Any]) -> bool:
    """True when a batch's videos are uint8 pixels, still to be normalised."""
    return any(videos.dtype == torch.uint8 for videos in batch["videos"].values())


def worker_start_method() -> str | None:
    """Return "fork" on Linux (cheap worker start even inside processes started by spawn), else the default.

    Workers never touch CUDA, so forking a process that has initialised CUDA is safe; torchrun's ranks fork their
    workers the same way.
    """
    return "fork" if sys.platform.startswith("linux") else None


@dataclass
class VideoLoader:
    """Iterable over one rank's batches of an epoch; `set_epoch` reseeds order, sampling and crops.

    Use `build_loader` to make one. Every batch arrives on `device` (float, normalised). With a main-process
    decoder and `prefetch` > 0, a background thread decodes up to `prefetch` batches ahead on its own CUDA stream
    (data_pipeline.prefetch) while the caller trains.
    """

    entries: list[ShardEntry]
    config: PipelineConfig
    decoder: Decoder
    plan: EpochPlan = EpochPlan()
    totals: dict[str, int] = field(default_factory=lambda: {key: 0 for key in STATS_KEYS})
    normalisation_tensors: tuple[torch.Tensor, torch.Tensor] | None = None
    rand_augment: ClipRandAugment | None = None

    @property
    def backend(self) -> str:
        """The decoder's registry name."""
        return self.decoder.name

    @property
    def device(self) -> torch.device:
        """Where every batch's frames arrive."""
        return torch.device(self.config.device)

    @property
    def prefetch(self) -> int:
        """Batches a main-process decoder runs ahead (0: in the caller's thread; always 0 for in-worker ones)."""
        if self.decoder.in_worker:
            return 0
        return DEFAULT_PREFETCH if self.config.prefetch is None else int(self.config.prefetch)

    @property
    def pin_memory(self) -> bool:
        """Pin the workers' batches for the copy to a CUDA device (in-worker decoders only)."""
        return self.decoder.in_worker and torch.cuda.is_available()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Set the epoch: all workers of all ranks derive shard order, shuffle, sampling and crops from it.

        `start_batch` (training only) starts the next pass at that batch of the epoch, as a run resumed in the
        middle of an epoch needs: it yields exactly the batches an uninterrupted pass yields from there on; the
        batches before it are cut from their videos (the workers' random streams stay in step) but not decoded.

        Raises
        ------
        ValueError
            If `start_batch` is outside 0 .. the batches of the epoch, or given to an evaluation loader.
        """
        start_batch = int(start_batch)
        if start_batch and not self.config.train:
            raise ValueError(f"start_batch={start_batch}: an evaluation pass always starts at its first batch")
        if not 0 <= start_batch <= self.plan.batches_per_rank:
            raise ValueError(f"start_batch={start_batch} is outside the epoch's {self.plan.batches_per_rank} batches")
        self.plan = replace(self.plan, epoch=int(epoch), start_batch=start_batch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (exact; in evaluation each worker's last batch may be partial)."""
        if self.config.train:
            return self.plan.batches_per_rank
        return eval_batches_per_rank(
            self.entries, self.config.rank, self.config.world_size, self.config.worker_slots, self.config.batch_size
        )

    @property
    def num_samples(self) -> int:
        """Videos in the split (all ranks)."""
        return sum(entry.num_samples for entry in self.entries)

    def _data_loader(self) -> DataLoader:
        """A fresh DataLoader for the current epoch."""
        return DataLoader(
            ShardVideoDataset(self.entries, self.config, self.plan, self.decoder if self.decoder.in_worker else None),
            batch_size=None,
            num_workers=self.config.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            multiprocessing_context=worker_start_method() if self.config.num_workers > 0 else None,
        )

    def _items(self) -> Iterator[tuple[Any, dict[str, int]]]:
        """The DataLoader's (item, stats delta) pairs of the current epoch."""
        yield from self._data_loader()

    def _finish(self, pair: tuple[Any, dict[str, int]]) -> tuple[dict[str, Any], dict[str, int]]:
        """Decode a worker's samples (main-process decoder), then bring the frames onto the device.

        Returns the batch and its stats delta, with the corrupt videos the main-process decoder replaced added.
        """
        item, stats = pair
        if not self.decoder.in_worker:
            item, replaced = self.decoder.decode(item)
            stats = dict(stats, corrupt_videos_replaced=stats["corrupt_videos_replaced"] + replaced)
            if self.rand_augment is not None:
                augment_batch_views(item, self.rand_augment, self.config.normalisation)
        if self.normalisation_tensors is None and holds_pixels(item):
            self.normalisation_tensors = normalisation_tensors(self.device, self.config.normalisation)
        return batch_on_device(item, self.device, self.config.normalisation, self.normalisation_tensors), stats

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
        if self.config.keep_freed_memory:
            keep_freed_host_memory()
        if self.prefetch < 1:
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


def build_loader(shards: str | Path, split: str = "train", *args: Any, **options: Any) -> VideoLoader:
    """Build the streaming multi-frame-count video loader of one rank.

    Parameters
    ----------
    shards : str or Path
        Folder holding ``<split>.manifest.json`` and its tars.
    split : str
        "train", "validation" or "test".
    *args, **options
        The options of `PipelineConfig` (data_pipeline.options: its attributes list them with their defaults), by
        keyword; frames and batch_size may also come positionally, in that order.

    Returns
    -------
    VideoLoader
        Iterable of {"videos": {T: float (B*V, T, 3, S, S)}, "label": long (B,), "id": list, "views": V}, the
        frames on the loader's device.

    Raises
    ------
    ValueError
        For an unknown or invalid option (the message names the fix), or a training split without a full batch.
    """
    unknown = sorted(set(options) - set(LOADER_OPTIONS))
    if unknown:
        raise ValueError(f"build_loader: unknown option(s) {unknown}; the options are {LOADER_OPTIONS}")
    config = PipelineConfig(*args, **options)
    device = resolve_device(config.device)
    backend = choose_backend(config.decode, device)
    entries = read_split(shards, split)
    batches = train_batches_per_rank(entries, config.world_size, config.batch_size) if config.train else 0
    config = replace(config, decode=backend, device=device)
    if config.train and batches == 0:
        raise ValueError(
            f"{shards}: {sum(e.num_samples for e in entries)} {split} videos give no full batch of "
            f"{config.batch_size} on each of {config.world_size} ranks; lower batch_size"
        )
    if not config.train and len(entries) < config.world_size * config.worker_slots:
        LOGGER.warning(
            "%s: %d %s shards for %d ranks x %d workers: every evaluation worker reads every shard and keeps its "
            "share of the samples (more I/O); write at least %d shards",
            shards, len(entries), split, config.world_size, config.worker_slots,
            config.world_size * config.worker_slots,
        )  # fmt: skip
    decoder = make_decoder(backend, device, config.batch_size * config.views * sum(config.frames),
                           config.normalisation)
    augment = None if decoder.in_worker else clip_rand_augment(config)  # in-worker decoders augment there
    return VideoLoader(entries, config, decoder, EpochPlan(batches_per_rank=batches), rand_augment=augment)


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The given device, else common.device.get_device() (CUDA, then MPS, then CPU)."""
    if device is None:
        from common.device import get_device

        device = get_device()
    return torch.device(device)
