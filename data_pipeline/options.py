"""The loader's options, defined once: `PipelineConfig`, and the command-line flags built from it.

`build_loader` takes these options as keywords; train.py, evaluate.py, predict.py and ``make gpu-check`` add the
flags they expose with `add_loader_arguments` and read them back with `loader_options`, so a flag's name, help,
type, choices and default are written only here. The choices of ``--decode``, ``--tar-reader``, ``--sampling``,
``--short-video`` and ``--test-crops`` come from their registries. What the loader decides per pass (the epoch, the
exact batches per rank, whether workers decode) is not an option: see `data_pipeline.loader.EpochPlan`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from data_pipeline.augment import (
    DEFAULT_CROP_SIZE,
    DEFAULT_JITTER_RANGE,
    IMAGENET_NORMALISATION,
    TEST_CROP_COUNTS,
    TEST_CROP_LAYOUTS,
    TRAIN_CROPS,
    Normalisation,
)
from data_pipeline.clip_augment import check_rand_augment
from data_pipeline.decode import DECODERS
from data_pipeline.sampling import SAMPLING_MODES, SHORT_VIDEO_RULES, check_sampling, check_short_video
from data_pipeline.stream import TAR_READERS

DEFAULT_SHUFFLE_BUFFER = 256
AUTO_DECODE = "auto"


def _flag(name: str, help_text: str, value_type: Callable[[str], Any] | None = None,
          choices: Callable[[], Sequence[Any]] | None = None, boolean: bool = False,
          nargs: int | None = None) -> dict[str, Any]:
    """Field metadata describing the option's command-line flag."""
    return {"flag": name, "help": help_text, "type": value_type, "choices": choices, "boolean": boolean,
            "nargs": nargs}


def decode_choices() -> tuple[str, ...]:
    """"auto" and every registered decode backend."""
    return (AUTO_DECODE, *DECODERS)


@dataclass
class PipelineConfig:
    """The loader's options: build_loader's keywords, and what every worker gets (picklable).

    Attributes
    ----------
    frames : tuple of int
        The frame counts each batch holds (one for a vanilla model).
    batch_size : int
        Videos per batch on this rank.
    train : bool
        Training (shuffle, augmentation, equal full batches on every rank) or evaluation (every video once).
    decode : str
        A backend of data_pipeline.decode.DECODERS ("dali", "torchvision", "cpu") or "auto"
        (data_pipeline.decode.choose_backend).
    device : torch.device or str, optional
        Where batches arrive (default: common.device.get_device(): CUDA, MPS, CPU).
    num_workers : int
        DataLoader workers per rank (0: in the main process).
    seed : int
        Base seed; with the epoch it fixes shard order, shuffle, sampling and crops.
    sampling, short_video : str
        See data_pipeline.sampling.
    crop_size, test_resize, multi_scale, flip, test_crops, test_clips
        See data_pipeline.augment.choose_boxes and sampling.plan_frames (training uses one clip).
    train_crop, jitter_range, test_crop_size, test_crop_layout
        The training crop mode (None: from multi_scale), the "jitter" short-side range, the test crops' side
        (None: crop_size) and their layout (data_pipeline.augment).
    train_views : int
        Training views per video (repeated augmentation: each view its own crop and RandAugment draw, the same
        frames); a batch then holds batch_size x train_views clips.
    rand_augment : str, optional
        A timm RandAugment configuration (e.g. "rand-m7-n4-mstd0.5-inc1") applied to every training view, the
        same transform on all its frames and frame counts (data_pipeline.clip_augment); None: off.
    shuffle_buffer : int
        Compressed samples held per worker for shuffling (training).
    rank, world_size : int, optional
        Default from torch.distributed when initialised, else 0 and 1.
    prefetch : int, optional
        Main-process decoders: batches decoded ahead in a background thread on a side CUDA stream, overlapping
        decode with training (default data_pipeline.prefetch.DEFAULT_PREFETCH; 0: decode in the caller's
        thread). Ignored by in-worker decoders (their workers already run ahead).
    tar_reader : str
        "lean" (data_pipeline.tar_reader, the default) or "webdataset" (WebDataset's tarfile-based iterator; the
        same samples, slower; a fallback should a shard written by another tool trip the lean reader).
    keep_freed_memory : bool
        Let malloc keep freed batch-sized blocks of this process for reuse (data_pipeline.host_memory; glibc
        only), set when iteration starts: the float batches (and, on the CPU, the training step's own large
        tensors) then reuse warm pages instead of faulting in fresh ones; the process keeps its peak heap.
    normalisation : Normalisation
        The model's mean, std and channel order (its input spec; ImageNet's RGB by default).
    """

    frames: tuple[int, ...] = (4, 8, 16)
    batch_size: int = 8
    train: bool = True
    decode: str = field(default=AUTO_DECODE, metadata=_flag(
        "--decode", "JPEG decoder (auto: dali on CUDA when installed, else torchvision on CUDA, else cpu)",
        choices=decode_choices))
    device: torch.device | str | None = None
    num_workers: int = field(default=4, metadata=_flag("--workers", "loader worker processes per process", int))
    seed: int = 0
    sampling: str = field(default="independent", metadata=_flag(
        "--sampling", "frame counts of a multi-frame-count batch: independent (official) or nested in the largest",
        choices=lambda: SAMPLING_MODES))
    short_video: str = field(default="official", metadata=_flag(
        "--short-video", "frame indices of videos with at most T frames: official (all 0, FFN), spread, or "
        "segments (TSM's test script; evaluation only)", choices=lambda: SHORT_VIDEO_RULES))
    crop_size: int = field(default=DEFAULT_CROP_SIZE, metadata=_flag("--crop-size", "crop side in pixels", int))
    test_resize: int | None = field(default=None, metadata=_flag(
        "--test-resize", "evaluation short side before the centre crop (default: crop * 256 // 224)", int))
    multi_scale: bool = field(default=True, metadata=_flag(
        "--multi-scale", "training crops of the official multi-scale recipe (else one centre crop)", boolean=True))
    train_crop: str | None = field(default=None, metadata=_flag(
        "--train-crop", "training crop: multi-scale (TSM, TEA), resized (a random crop at the test short side), "
        "jitter (short-side jitter, SlowFast), random-resized (UniFormer); default: from --[no-]multi-scale",
        choices=lambda: TRAIN_CROPS))
    jitter_range: tuple[int, int] = field(default=DEFAULT_JITTER_RANGE, metadata=_flag(
        "--jitter-range", "short-side range of --train-crop jitter (MIN MAX)", int, nargs=2))
    train_views: int = field(default=1, metadata=_flag(
        "--train-views", "training views per video (repeated augmentation: own crop and RandAugment, same "
        "frames)", int))
    rand_augment: str | None = field(default=None, metadata=_flag(
        "--rand-augment", "timm RandAugment configuration for training views, the same on every frame of a clip "
        "(e.g. rand-m7-n4-mstd0.5-inc1)"))
    flip: bool = field(default=False, metadata=_flag(
        "--flip", "random horizontal flip in training (never for Something-Something: it swaps left and right)",
        boolean=True))
    test_crops: int = field(default=1, metadata=_flag(
        "--test-crops", "1: centre crop; 3: TSM's GroupFullResSample (left, right, centre)", int,
        choices=lambda: TEST_CROP_COUNTS))
    test_clips: int = field(default=1, metadata=_flag(
        "--test-clips", "temporal clips per video (2: TSM's twice_sample, centre then start)", int))
    test_crop_size: int | None = field(default=None, metadata=_flag(
        "--test-crop-size", "side of the test crops (default: --crop-size)", int))
    test_crop_layout: str = field(default="tsm", metadata=_flag(
        "--test-crop-layout", "tsm: centre crop / GroupFullResSample; uniform: PySlowFast's uniform_crop (one "
        "crop: the left or top one)", choices=lambda: TEST_CROP_LAYOUTS))
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    rank: int | None = None
    world_size: int | None = None
    prefetch: int | None = None
    tar_reader: str = field(default="lean", metadata=_flag(
        "--tar-reader", "shard tar reader (webdataset: WebDataset's own, slower; a fallback)",
        choices=lambda: TAR_READERS))
    keep_freed_memory: bool = True
    normalisation: Normalisation = IMAGENET_NORMALISATION

    def __post_init__(self) -> None:
        """Check the options (ValueError naming the fix), fill rank and world_size, fix the types."""
        check_options(self)
        self.rank, self.world_size = distributed_defaults(self.rank, self.world_size)
        self.frames = tuple(int(frames) for frames in self.frames)
        self.batch_size, self.seed, self.crop_size = int(self.batch_size), int(self.seed), int(self.crop_size)
        self.train, self.shuffle_buffer = bool(self.train), int(self.shuffle_buffer)
        self.test_crops = 1 if self.train else int(self.test_crops)
        self.test_clips = 1 if self.train else int(self.test_clips)
        self.train_views = int(self.train_views) if self.train else 1
        self.jitter_range = (int(self.jitter_range[0]), int(self.jitter_range[1]))

    @property
    def views(self) -> int:
        """Views per video in a batch: training views, or test crops x test clips."""
        return self.train_views if self.train else self.test_crops * self.test_clips

    @property
    def worker_slots(self) -> int:
        """Workers sharing this rank's work (1 when loading in the main process)."""
        return max(1, self.num_workers)


LOADER_OPTIONS = tuple(option.name for option in fields(PipelineConfig))
FLAG_OPTIONS = tuple(option.name for option in fields(PipelineConfig) if "flag" in option.metadata)


def check_options(config: PipelineConfig) -> None:
    """Raise ValueError with the fix for invalid options."""
    if not config.frames or any(int(frames) < 1 for frames in config.frames):
        raise ValueError(f"frames={tuple(config.frames)}; pass positive frame counts, e.g. (4, 8, 16)")
    if config.batch_size < 1:
        raise ValueError(f"batch_size={config.batch_size}; use at least 1")
    check_sampling(config.sampling)
    check_short_video(config.short_video, config.train)
    if config.crop_size < 1:
        raise ValueError(f"crop_size={config.crop_size}; use a positive size")
    if config.tar_reader not in TAR_READERS:
        raise ValueError(f"tar_reader={config.tar_reader!r}; use one of {TAR_READERS}")
    if config.train_crop is not None and config.train_crop not in TRAIN_CROPS:
        raise ValueError(f"train_crop={config.train_crop!r}; use one of {TRAIN_CROPS}")
    if config.test_crop_layout not in TEST_CROP_LAYOUTS:
        raise ValueError(f"test_crop_layout={config.test_crop_layout!r}; use one of {TEST_CROP_LAYOUTS}")
    if int(config.train_views) < 1:
        raise ValueError(f"train_views={config.train_views}; use at least 1")
    low, high = config.jitter_range
    if not 0 < int(low) <= int(high):
        raise ValueError(f"jitter_range={tuple(config.jitter_range)}; give MIN MAX with 0 < MIN <= MAX")
    if config.rand_augment is not None:
        check_rand_augment(config.rand_augment)
    if config.prefetch is not None and config.prefetch < 0:
        raise ValueError(f"prefetch={config.prefetch}; use 0 (off) or a positive queue depth")


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


def add_loader_arguments(parser: argparse.ArgumentParser | Any, names: Sequence[str],
                         defaults: dict[str, Any] | None = None) -> None:
    """Add the flags of the options `names` to a parser (or argument group), as PipelineConfig defines them.

    Each flag's value lands in the attribute named like the option (``--workers`` -> ``num_workers``).
    `defaults` overrides a flag's default (e.g. None where a preset fills it in later).
    """
    by_name = {option.name: option for option in fields(PipelineConfig)}
    for name in names:
        option = by_name[name]
        if "flag" not in option.metadata:
            raise ValueError(f"loader option {name!r} has no command-line flag")
        meta = option.metadata
        default = (defaults or {}).get(name, option.default)
        keywords: dict[str, Any] = {"dest": name, "default": default, "help": meta["help"]}
        if meta["boolean"]:
            keywords["action"] = argparse.BooleanOptionalAction
        else:
            if meta["type"] is not None:
                keywords["type"] = meta["type"]
            if meta["choices"] is not None:
                keywords["choices"] = tuple(meta["choices"]())
            if meta.get("nargs") is not None:
                keywords["nargs"] = meta["nargs"]
        parser.add_argument(meta["flag"], **keywords)


def loader_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The values of the loader options `names` parsed by `add_loader_arguments`, as build_loader keywords."""
    return {name: getattr(args, name) for name in names}
