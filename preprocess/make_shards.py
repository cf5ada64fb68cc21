"""`make shards`: a video dataset as distributed to packed JPEG-frame WebDataset shards, resumable, parallel.

Usage::

    python -m preprocess.make_shards [--dataset ssv2|ssv1|k400|hmdb51|tsm-list] --data-root DIR --out SHARDS
        [--workers N] [--short-side 256] [--fps N] [--quality 90] [--train-shards 256] [--eval-shards 64]
        [--seed 0] [--strict] [--slice-index K --slice-count N | --finalize-only] [dataset flags]

The dataset module (preprocess/datasets/) reads the dataset's own layout into entries: id, split, label, class
names, source (a video file, decoded by ffmpeg, or a folder of frame files, read without decoding) and a skip
reason; everything below is the same for every dataset. Each split's usable videos are put in a seeded shuffled order (sorted by a hash of seed, split and id, so the
order does not depend on the annotation file order) and cut into contiguous runs, one per shard. A shard is
written under a temporary name, renamed when complete, then its sidecar records samples, frames, bytes, skipped
ids and the settings hash. A rerun skips every shard whose sidecar carries the same settings hash. The finalize
step assembles ``<split>.manifest.json`` from the sidecars and refuses when a shard is missing.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import logging
import math
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from common.atomic import remove_stale_temporaries
import shard_format
from preprocess.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    SOURCE_FRAMES,
    SOURCE_VIDEO,
    AnnotationError,
    Dataset,
    DatasetIndex,
    VideoEntry,
    entries_digest,
)
from preprocess.ffmpeg_tools import FfmpegInfo, FfmpegNotFoundError, resolve_ffmpeg
from shard_format import DEFAULT_QUALITY, DEFAULT_SHORT_SIDE, QUALITY_RANGE, SPLITS, ManifestError
from preprocess.synthetic import default_workers

LOGGER = logging.getLogger("preprocess.make_shards")

DEFAULT_TRAIN_SHARDS = 256
DEFAULT_EVAL_SHARDS = 64
DEFAULT_SEED = 0
DEFAULT_BATCH_VIDEOS = 16
DEFAULT_MAX_SHARD_BYTES = 1_000_000_000
DEFAULT_MAX_SKIP_FRACTION = 0.01
PROGRESS_POLL_S = 0.2
EXIT_OK = 0
EXIT_TOO_MANY_SKIPPED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_SHARDS = 3
SLURM_TASK_ID = "SLURM_ARRAY_TASK_ID"
SLURM_TASK_COUNT = "SLURM_ARRAY_TASK_COUNT"
SLURM_TASK_MIN = "SLURM_ARRAY_TASK_MIN"
FRAMES_RULE = "every frame at the native frame rate (ffmpeg -fps_mode passthrough)"
RESIZE_RULE = "ffmpeg scale (bicubic) in YUV, then unscaled YUV to RGB"
PIXEL_ASPECT_RULE = (
    "square pixels: a non-square sample aspect ratio is resized to the display aspect (coded width x SAR) in the "
    "same resize; the SAR it applied (the container's, else the bitstream's) is in the sample's \"source_sar\" "
    "(absent: square)"
)
ALPHA_RULE = "VP8/VP9 alpha decoded with libvpx and composited on black (RGB = colour x alpha)"
NON_VIDEO_RULE = (
    "a still image (image demuxer, or a one-frame GIF/APNG/animated WebP/JPEG XL, whatever the file name) is "
    "skipped as not a video; an animation of several frames is a video"
)
FRAME_FILES_RULE = (
    "every frame file of the folder in number order, numbered from 1 without a gap (1..N of a list file's count "
    "when it gives one); no video decode"
)
COPY_RULE = (
    "a JPEG frame (RGB or grey, ending at its EOI marker) whose stored size is its own is copied byte for byte; "
    "any other frame is decoded with Pillow, resized and encoded at jpeg_quality"
)
FRAME_RESIZE_RULE = "Pillow bicubic in RGB, long side rounded to the nearest pixel"


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to write one shard (picklable)."""

    split: str
    index: int
    shard_path: str
    entries: tuple[VideoEntry, ...]
    settings_digest: str
    ffmpeg: str
    short_side: int
    quality: int
    batch_videos: int
    fps: float | None = None


@dataclasses.dataclass
class SplitPlan:
    """The shards of one split: their tasks, settings and the entries skipped before sharding."""

    split: str
    settings: dict[str, Any]
    tasks: list[ShardTask]
    pre_skipped: list[dict[str, str]]
    class_names: list[str] | None = None
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    label_file: str = ""


def jpeg_encoder_name() -> str:
    """Return the JPEG encoder and library versions (they decide the exact bytes)."""
    import PIL
    from PIL import features

    turbo = features.version("libjpeg_turbo") or features.version("jpg") or "unknown"
    return f"Pillow {PIL.__version__}, libjpeg-turbo {turbo}, IJG quality scale, 4:2:0 chroma, baseline"


def size_rule(short_side: int) -> str:
    """Describe the frame size rule in words for the manifest."""
    if short_side <= 0:
        return "native size"
    return f"short side {short_side} (landscape: height {short_side}, width keeps the aspect ratio, as -1:{short_side})"


def shuffle_key(seed: int, split: str, video_id: str) -> str:
    """Return the sort key that fixes a video's place in the seeded shuffled order."""
    return hashlib.sha256(f"{seed}:{split}:{video_id}".encode("utf-8")).hexdigest()


def shard_count(requested: int, usable: int) -> int:
    """Cap the requested shard count so no shard is planned empty (0 when the split has no usable video)."""
    return 0 if usable == 0 else max(1, min(requested, usable))


def frames_rule(fps: float | None) -> str:
    """Describe which frames of a video file are stored (every one, or resampled to `fps`)."""
    if fps is None:
        return FRAMES_RULE
    return f"resampled to {fps:g} fps (ffmpeg fps filter), then every frame (ffmpeg -fps_mode passthrough)"


def split_settings(
    args: argparse.Namespace, ffmpeg: FfmpegInfo | None, split: str, num_shards: int, digest: str, num_classes: int,
    source_kind: str = SOURCE_VIDEO, dataset_settings: dict[str, Any] | None = None,
) -> dict:
    """Return the settings recorded in a split's manifest; their hash guards every sidecar.

    Video files record the ffmpeg rules and binary (``fps`` only when given); frame folders record how their
    files are stored. `dataset_settings` (e.g. the frame file pattern) are added as they are.
    """
    if source_kind == SOURCE_FRAMES:
        settings = frame_folder_settings(args, split, num_shards, digest, num_classes)
    else:
        settings = video_settings(args, ffmpeg, split, num_shards, digest, num_classes)
    return {**settings, **(dataset_settings or {})}


def frame_folder_settings(args: argparse.Namespace, split: str, num_shards: int, digest: str,
                          num_classes: int) -> dict[str, Any]:
    """The settings of a split read from frame folders (no ffmpeg)."""
    return {
        "format_version": shard_format.FORMAT_VERSION,
        "split": split,
        "num_classes": num_classes,
        "frames": FRAME_FILES_RULE,
        "size_rule": size_rule(args.short_side),
        "short_side": args.short_side,
        "frame_files": COPY_RULE,
        "resize": FRAME_RESIZE_RULE,
        "jpeg_quality": args.quality,
        "jpeg_encoder": jpeg_encoder_name(),
        "seed": args.seed,
        "num_shards": num_shards,
        "annotations": digest,
    }


def video_settings(args: argparse.Namespace, ffmpeg: FfmpegInfo, split: str, num_shards: int, digest: str,
                   num_classes: int) -> dict[str, Any]:
    """The settings of a split read from video files (the ffmpeg rules and binary)."""
    settings = {
        "format_version": shard_format.FORMAT_VERSION,
        "split": split,
        "num_classes": num_classes,
        "frames": frames_rule(args.fps),
        "size_rule": size_rule(args.short_side),
        "short_side": args.short_side,
        "resize": RESIZE_RULE,
        "pixel_aspect": PIXEL_ASPECT_RULE,
        "alpha": ALPHA_RULE,
        "non_video": NON_VIDEO_RULE,
        "jpeg_quality": args.quality,
        "jpeg_encoder": jpeg_encoder_name(),
        "ffmpeg_path": ffmpeg.path,
        "ffmpeg_version": ffmpeg.version,
        "seed": args.seed,
        "num_shards": num_shards,
        "annotations": digest,
    }
    if args.fps is not None:
        settings["fps"] = args.fps
    return settings


def plan_split(
    args: argparse.Namespace, ffmpeg: FfmpegInfo | None, split: str, entries: Sequence[VideoEntry],
    num_classes: int, names: Sequence[str] | None = None, dataset: Dataset | None = None,
    dataset_index: DatasetIndex | None = None,
) -> SplitPlan:
    """Order a split's videos, cut them into shards and build each shard's task.

    `num_classes` and `names` (class-index order) go into the settings and the manifest; `dataset` and
    `dataset_index` (what the dataset module read) give the source kind, the dataset's own settings and the
    facts recorded in the manifest (dataset, flip).
    """
    usable = sorted(
        (entry for entry in entries if entry.skip_reason is None),
        key=lambda entry: shuffle_key(args.seed, split, entry.video_id),
    )
    pre_skipped = [{"id": entry.video_id, "reason": entry.skip_reason} for entry in entries if entry.skip_reason]
    requested = args.train_shards if split == "train" else args.eval_shards
    num_shards = shard_count(requested, len(usable))
    source_kind = dataset.source_kind if dataset is not None else SOURCE_VIDEO
    settings = split_settings(args, ffmpeg, split, num_shards, entries_digest(usable), num_classes, source_kind,
                              dataset_index.settings if dataset_index is not None else None)
    digest = shard_format.settings_hash(settings)
    tasks = []
    bounds = shard_format.shard_bounds(len(usable), num_shards)
    for index in range(num_shards):
        chunk = tuple(usable[bounds[index] : bounds[index + 1]])
        tasks.append(
            ShardTask(
                split=split,
                index=index,
                shard_path=str(Path(args.out) / shard_format.shard_name(split, index)),
                entries=chunk,
                settings_digest=digest,
                ffmpeg=ffmpeg.path if ffmpeg is not None else "",
                short_side=args.short_side,
                quality=args.quality,
                batch_videos=args.batch_videos,
                fps=args.fps,
            )
        )
    facts = {"dataset": dataset.name, "flip": bool(args.flip)} if dataset is not None else {}
    label_file = dataset_index.label_files.get(split, "") if dataset_index is not None else ""
    return SplitPlan(split=split, settings=settings, tasks=tasks, pre_skipped=pre_skipped,
                     class_names=list(names) if names is not None else None, facts=facts, label_file=label_file)


def decode_entries(task: ShardTask, entries: Sequence[VideoEntry]) -> list[Any]:
    """Decode a batch of entries in order: video files with ffmpeg (one process), frame folders without."""
    from preprocess.frame_folders import read_frame_folder
    from preprocess.video_decode import decode_videos

    videos = [entry for entry in entries if entry.source_kind == SOURCE_VIDEO]
    decoded = iter(decode_videos(task.ffmpeg, [Path(entry.source) for entry in videos], task.short_side,
                                 task.quality, max(1, len(videos)), task.fps) if videos else [])
    return [
        next(decoded) if entry.source_kind == SOURCE_VIDEO
        else read_frame_folder(Path(entry.source), entry.frame_pattern, entry.num_frames, task.short_side,
                               task.quality)
        for entry in entries
    ]


def _shard_members(
    task: ShardTask, counts: dict[str, Any], report: Callable[[int, int], None]
) -> Iterator[tuple[str, bytes]]:
    """Yield a shard's tar members batch by batch, so only one batch of frames is held in memory."""
    step = max(1, task.batch_videos)
    for start in range(0, len(task.entries), step):
        entries = task.entries[start : start + step]
        videos = decode_entries(task, entries)
        batch_frames = 0
        for entry, video in zip(entries, videos):
            if video.error is not None:
                counts["skipped"].append({"id": entry.video_id, "reason": video.error})
                continue
            yield from shard_format.encode_sample(
                entry.video_id, entry.label, entry.template, video.frames, video.width, video.height,
                video.source_sar,
            )
            counts["samples"] += 1
            batch_frames += len(video.frames)
        counts["frames"] += batch_frames
        report(len(entries), batch_frames)


def write_shard(task: ShardTask, report: Callable[[int, int], None]) -> dict[str, Any]:
    """Decode, encode and write one shard atomically, then its sidecar; return the sidecar record."""
    shard_path = Path(task.shard_path)
    remove_stale_temporaries(shard_path)
    shard_format.sidecar_path(shard_path).unlink(missing_ok=True)
    counts: dict[str, Any] = {"samples": 0, "frames": 0, "skipped": []}
    shard_format.write_tar_atomic(shard_path, _shard_members(task, counts, report))
    return shard_format.write_sidecar(
        shard_path, counts["samples"], counts["frames"], counts["skipped"], task.settings_digest
    )


_PROGRESS_QUEUE = None


def _init_worker(progress_queue: Any) -> None:
    """Pool initializer: keep the progress queue in the worker."""
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = progress_queue


def _write_shard_in_worker(task: ShardTask) -> dict[str, Any]:
    """Worker entry point: write one shard and send (videos, frames) after each batch."""
    return write_shard(task, lambda videos, frames: _PROGRESS_QUEUE.put((videos, frames)))


class Progress:
    """A tqdm bar over videos with frames/s; silent when disabled."""

    def __init__(self, total_videos: int, enabled: bool | None) -> None:
        from tqdm import tqdm

        disabled = not sys.stderr.isatty() if enabled is None else not enabled
        self.bar = tqdm(total=total_videos, unit="video", disable=disabled, dynamic_ncols=True)
        self.frames = 0
        self.started = time.perf_counter()

    def update(self, videos: int, frames: int) -> None:
        """Count a finished batch."""
        self.frames += frames
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.frames / elapsed:.0f} frames/s", refresh=False)
        self.bar.update(videos)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def run_tasks(tasks: Sequence[ShardTask], workers: int, progress: Progress) -> list[dict[str, Any]]:
    """Write every shard of `tasks` with `workers` processes; return their sidecar records."""
    if workers <= 1 or len(tasks) <= 1:
        return [write_shard(task, progress.update) for task in tasks]
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    with context.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(progress_queue,)) as pool:
        pending = [pool.apply_async(_write_shard_in_worker, (task,)) for task in tasks]
        while not all(result.ready() for result in pending):
            _drain(progress_queue, progress, PROGRESS_POLL_S)
        records = [result.get() for result in pending]
        pool.close()
        pool.join()
    _drain(progress_queue, progress, 0.0)
    return records


def _drain(progress_queue: Any, progress: Progress, timeout: float) -> None:
    """Apply every progress message waiting in the queue (waiting up to `timeout` for the first)."""
    try:
        while True:
            videos, frames = progress_queue.get(timeout=timeout) if timeout else progress_queue.get_nowait()
            progress.update(videos, frames)
            timeout = 0.0
    except queue.Empty:
        return


def slice_of(tasks: Sequence[ShardTask], slice_index: int, slice_count: int) -> list[ShardTask]:
    """Return slice `slice_index` of `slice_count` (round robin over all splits' shards)."""
    return list(tasks[slice_index::slice_count])


def slurm_slice() -> tuple[int, int] | None:
    """Return (slice index, slice count) from a SLURM array job's environment, or None outside one."""
    if SLURM_TASK_ID not in os.environ or SLURM_TASK_COUNT not in os.environ:
        return None
    first = int(os.environ.get(SLURM_TASK_MIN, "0"))
    return int(os.environ[SLURM_TASK_ID]) - first, int(os.environ[SLURM_TASK_COUNT])


def finalize(out_dir: Path, plans: Sequence[SplitPlan], max_shard_bytes: int) -> dict[str, dict[str, Any]]:
    """Assemble every split's manifest from the sidecars.

    Raises
    ------
    ManifestError
        Naming every split with missing shards (and the first missing names).
    """
    manifests, problems = {}, []
    for plan in plans:
        try:
            manifests[plan.split] = shard_format.assemble_manifest(
                out_dir, plan.split, len(plan.tasks), plan.settings, plan.pre_skipped, plan.class_names, plan.facts
            )
        except ManifestError as error:
            problems.append(str(error))
            continue
        _warn_big_shards(manifests[plan.split], max_shard_bytes)
        _warn_stale_shards(out_dir, plan)
    if problems:
        raise ManifestError("; ".join(problems))
    return manifests


def _warn_big_shards(manifest: dict[str, Any], max_shard_bytes: int) -> None:
    """Warn when a shard is over --max-shard-bytes and say which shard count would fit."""
    total = sum(shard["bytes"] for shard in manifest["shards"])
    biggest = max((shard["bytes"] for shard in manifest["shards"]), default=0)
    if biggest > max_shard_bytes:
        flag = "--train-shards" if manifest["split"] == "train" else "--eval-shards"
        LOGGER.warning(
            "%s: largest shard %d bytes > --max-shard-bytes %d; rerun with %s %d",
            manifest["split"], biggest, max_shard_bytes, flag, math.ceil(total / max_shard_bytes * 1.1),
        )  # fmt: skip


def _warn_stale_shards(out_dir: Path, plan: SplitPlan) -> None:
    """Warn about shard files of this split that the current plan does not use (from other settings)."""
    planned = {shard_format.shard_name(plan.split, index) for index in range(len(plan.tasks))}
    stale = sorted(path.name for path in Path(out_dir).glob(f"{plan.split}-*{shard_format.SHARD_SUFFIX}"))
    stale = [name for name in stale if name not in planned]
    if stale:
        LOGGER.warning(
            "%s: %d shard files not in the manifest (e.g. %s); delete them", plan.split, len(stale), stale[0]
        )


def skip_summary(skipped: Sequence[dict[str, str]]) -> dict[str, int]:
    """Count skipped videos by reason category (the text before the first colon)."""
    return dict(collections.Counter(entry["reason"].split(":")[0] for entry in skipped))


def report_summary(written: int, frames: int, skipped: Sequence[dict[str, str]], scope: str) -> None:
    """Print the end-of-run summary: videos written, frames, skipped by reason."""
    by_reason = ", ".join(f"{reason}: {count}" for reason, count in sorted(skip_summary(skipped).items()))
    print(f"{scope}: {written} videos written ({frames} frames), {len(skipped)} skipped" + (
        f" ({by_reason})" if skipped else ""))  # fmt: skip


def report_empty_split(plan: SplitPlan, manifest: dict[str, Any]) -> None:
    """Print one line naming a split that holds no video and why (nothing for a split with videos)."""
    if manifest["num_samples"]:
        return
    annotation_file = plan.label_file
    skipped = manifest["skipped"]
    if not skipped:
        why = f"{annotation_file} lists no video"
    else:
        by_reason = ", ".join(f"{reason}: {count}" for reason, count in sorted(skip_summary(skipped).items()))
        why = f"all {len(skipped)} videos of {annotation_file} were skipped ({by_reason})"
    print(f"{plan.split}: empty split, {why}; its manifest lists no shard", flush=True)


def exit_status(written: int, skipped: int, strict: bool, max_skip_fraction: float) -> int:
    """Return non-zero when --strict and anything was skipped, or the skipped fraction is over the limit."""
    total = written + skipped
    if strict and skipped:
        LOGGER.error("--strict: %d videos skipped (listed in the manifests' \"skipped\")", skipped)
        return EXIT_TOO_MANY_SKIPPED
    if total and skipped / total > max_skip_fraction:
        LOGGER.error(
            "%d of %d videos skipped (%.2f%%) > --max-skip-fraction %.4g; check the \"skipped\" reasons",
            skipped, total, 100.0 * skipped / total, max_skip_fraction,
        )  # fmt: skip
        return EXIT_TOO_MANY_SKIPPED
    return EXIT_OK


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m preprocess.make_shards", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default=DEFAULT_DATASET,
                        help="the dataset's layout: " + "; ".join(f"{name}: {dataset.description}"
                                                                  for name, dataset in DATASETS.items()))
    parser.add_argument("--data-root", type=Path, required=True, help="the dataset as distributed (see --dataset)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for shards, sidecars, manifests")
    parser.add_argument("--splits", nargs="+", default=None, choices=list(SPLITS),
                        help="splits to write (default: every split the dataset has)")
    parser.add_argument("--short-side", type=int, default=None,
                        help=f"output short side; 0 = native size (default {DEFAULT_SHORT_SIDE}; ssv1, tsm-list: 0)")
    parser.add_argument("--fps", type=positive_number, default=None,
                        help="video files: resample to this frame rate (default: every frame)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="record whether training may flip frames horizontally (default: the dataset's rule; "
                             "tsm-list needs it)")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality, IJG scale (libjpeg)")
    parser.add_argument("--train-shards", type=int, default=DEFAULT_TRAIN_SHARDS,
                        help="train shards (capped at the number of videos)")
    parser.add_argument("--eval-shards", type=int, default=DEFAULT_EVAL_SHARDS,
                        help="validation and test shards each (capped at the number of videos)")
    parser.add_argument("--max-shard-bytes", type=int, default=DEFAULT_MAX_SHARD_BYTES,
                        help="finalize warns above this size and prints the shard count that fits")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the shuffled video order")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: half the usable cores; each keeps about two busy)")
    parser.add_argument("--batch-videos", type=int, default=DEFAULT_BATCH_VIDEOS, help="videos per ffmpeg process")
    parser.add_argument("--slice-index", type=int, default=None, help="this job's slice (default: SLURM array)")
    parser.add_argument("--slice-count", type=int, default=None, help="number of slices (default: SLURM array)")
    parser.add_argument("--finalize-only", action="store_true", help="only assemble the manifests from the sidecars")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any video is skipped")
    parser.add_argument("--max-skip-fraction", type=float, default=DEFAULT_MAX_SKIP_FRACTION,
                        help="exit non-zero above this fraction of skipped videos")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: when stderr is a terminal)")
    group = parser.add_argument_group("dataset flags")
    for dataset in DATASETS.values():
        if dataset.add_arguments is not None:
            dataset.add_arguments(group)
    args = parser.parse_args(argv)
    _check_dataset_args(parser, args)
    _check_args(parser, args)
    return args


def default_shard_workers() -> int:
    """Worker processes by default: half the usable cores (at least one).

    Each worker keeps about two cores busy: its own process encodes JPEG frames while its ffmpeg child decodes the
    next videos. On 2 cores, 2 workers ran at 0.82-0.89x the frames/s of 1 (docs/data.md, "Workers").
    """
    return max(1, default_workers() // 2)


def positive_number(text: str) -> int | float:
    """Parse a positive frame rate (an int when whole)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive frame rate, e.g. 10")
    return int(value) if value == int(value) else value


def _check_dataset_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the dataset's defaults (splits, short side, flip rule) and refuse another dataset's flags."""
    dataset = DATASETS[args.dataset]
    for other in DATASETS.values():
        given = [name for name in other.own_flags if other is not dataset and getattr(args, name, None) is not None]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} applies to --dataset {other.name}, not {dataset.name}")
    if dataset.check_arguments is not None and (problem := dataset.check_arguments(args)):
        parser.error(problem)
    available = dataset.available_splits(args)
    if args.splits is None:
        args.splits = list(available)
    missing = [split for split in args.splits if split not in available]
    if missing:
        parser.error(f"--dataset {dataset.name} has no {missing[0]} split here; choose among {list(available)}")
    if args.short_side is None:
        args.short_side = dataset.default_short_side
    if args.fps is not None and dataset.source_kind == SOURCE_FRAMES:
        parser.error(f"--fps resamples video files; --dataset {dataset.name} stores its frame files as they are")
    if args.flip is None:
        args.flip = dataset.flip


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject impossible values with one clear line each; fill the slice from SLURM when not given."""
    if not QUALITY_RANGE[0] <= args.quality <= QUALITY_RANGE[1]:
        parser.error(f"--quality {args.quality}: choose {QUALITY_RANGE[0]}-{QUALITY_RANGE[1]} (IJG scale)")
    if args.short_side < 0:
        parser.error("--short-side must be >= 0 (0 keeps the native size)")
    if min(args.train_shards, args.eval_shards, args.batch_videos) < 1:
        parser.error("--train-shards, --eval-shards and --batch-videos must be >= 1")
    if args.slice_index is None and args.slice_count is None:
        args.slice_index, args.slice_count = slurm_slice() or (0, 1)
    if args.slice_index is None or args.slice_count is None:
        parser.error("give both --slice-index and --slice-count")
    if not 0 <= args.slice_index < args.slice_count:
        parser.error(f"--slice-index {args.slice_index} must be in [0, --slice-count {args.slice_count})")
    if args.workers is None:
        args.workers = default_shard_workers()


def build_plans(args: argparse.Namespace, ffmpeg: FfmpegInfo | None) -> list[SplitPlan]:
    """Read and validate every label file of the dataset, then plan every split (nothing is written)."""
    dataset = DATASETS[args.dataset]
    index = dataset.read(args.data_root, args.splits, args)
    return [
        plan_split(args, ffmpeg, split, entries, index.class_count, index.class_names, dataset, index)
        for split, entries in index.entries.items()
    ]


def run_slice(args: argparse.Namespace, plans: Sequence[SplitPlan]) -> tuple[int, int, list[dict[str, str]]]:
    """Write this slice's incomplete shards; return (videos written, frames, skipped) over the slice."""
    mine = slice_of([task for plan in plans for task in plan.tasks], args.slice_index, args.slice_count)
    todo = [task for task in mine if not shard_format.shard_is_complete(Path(task.shard_path), task.settings_digest)]
    LOGGER.info(
        "slice %d/%d: %d shards, %d already complete, %d to write with %d workers",
        args.slice_index, args.slice_count, len(mine), len(mine) - len(todo), len(todo), args.workers,
    )  # fmt: skip
    Path(args.out).mkdir(parents=True, exist_ok=True)
    progress = Progress(sum(len(task.entries) for task in todo), args.progress)
    try:
        run_tasks(todo, args.workers, progress)
    finally:
        progress.close()
    records = [shard_format.read_sidecar(Path(task.shard_path)) or {} for task in mine]
    skipped = [entry for record in records for entry in record.get("skipped", [])]
    return sum(r.get("num_samples", 0) for r in records), sum(r.get("num_frames", 0) for r in records), skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Run `make shards`; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        ffmpeg = None
        if DATASETS[args.dataset].source_kind == SOURCE_VIDEO:
            ffmpeg = resolve_ffmpeg()
            LOGGER.info("ffmpeg: %s (%s, found via %s)", ffmpeg.path, ffmpeg.version, ffmpeg.source)
        plans = build_plans(args, ffmpeg)
    except (AnnotationError, FfmpegNotFoundError) as error:
        LOGGER.error("%s", error)
        return EXIT_BAD_INPUT
    for plan in plans:
        LOGGER.info("%s: %d shards, settings hash %s", plan.split, len(plan.tasks),
                    shard_format.settings_hash(plan.settings))  # fmt: skip
    if not args.finalize_only:
        written, frames, skipped = run_slice(args, plans)
        if args.slice_count > 1:
            report_summary(written, frames, skipped, f"slice {args.slice_index}/{args.slice_count}")
            LOGGER.info("slice done; run with --finalize-only (same flags) once every slice has finished")
            return exit_status(written, len(skipped), args.strict, args.max_skip_fraction)
    return _finalize_and_report(args, plans)


def _finalize_and_report(args: argparse.Namespace, plans: Sequence[SplitPlan]) -> int:
    """Assemble the manifests, print the summary per split and overall, return the exit status."""
    try:
        manifests = finalize(args.out, plans, args.max_shard_bytes)
    except ManifestError as error:
        LOGGER.error("finalize refused: %s", error)
        return EXIT_MISSING_SHARDS
    written = frames = 0
    skipped: list[dict[str, str]] = []
    for plan in plans:
        report_empty_split(plan, manifests[plan.split])
    for split, manifest in manifests.items():
        report_summary(manifest["num_samples"], manifest["num_frames"], manifest["skipped"],
                       f"{split} ({len(manifest['shards'])} shards)")  # fmt: skip
        written += manifest["num_samples"]
        frames += manifest["num_frames"]
        skipped += manifest["skipped"]
    report_summary(written, frames, skipped, "total")
    return exit_status(written, len(skipped), args.strict, args.max_skip_fraction)


if __name__ == "__main__":
    sys.exit(main())
