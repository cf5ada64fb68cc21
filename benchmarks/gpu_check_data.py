"""The shards that ``benchmarks.gpu_check`` makes for itself, with numpy and Pillow only (no ffmpeg).

The check must run where ffmpeg is not installed, so it does not use ``make synthetic`` / ``make shards``: it
writes the shard format directly (``shard_format.write_jpeg_split``):

- throughput shards: textured 427x240 frames (about 20-25 kB per JPEG at Pillow quality 90, like SSv2 frames),
  thousands of videos of 30-60 frames. To make them in seconds, a pool of distinct textured clips is rendered
  and JPEG-encoded once (in parallel processes) and every video is a window of one pool clip: every JPEG is real
  and is decoded for real, only the bytes repeat across videos (a decoder cannot tell);
- temporal shards: small synthetic temporal-class clips (``preprocess.synthetic``, e.g. 32 px) for a short real
  training whose held-out accuracy must beat chance by far.

It also draws the samples the backend sections compare (``select_samples``: frames and crop boxes chosen as the
loader's workers choose them) and turns them into a batch with any decode backend (``BatchDecoder``).
"""

from __future__ import annotations

import io
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from shard_format import write_jpeg_split
from preprocess.synthetic import CLASS_TEMPLATES, clip_rng, plan_dataset, render_clip

JPEG_QUALITY = 90
THROUGHPUT_SPLIT = "train"
THROUGHPUT_TEMPLATE = "Synthetic textured throughput clip"
THROUGHPUT_NUM_CLASSES = 174
TEMPORAL_SPLIT_FRACTIONS = (0.8, 0.2, 0.0)
TEMPORAL_SPLITS = ("train", "validation")
TEMPORAL_FRAMES = 48
VIDEOS_PER_SHARD = 64


@dataclass(frozen=True)
class ThroughputSpec:
    """What the throughput shards hold.

    Attributes
    ----------
    num_videos : int
        Videos written.
    min_frames, max_frames : int
        Video length range (uniform).
    width, height : int
        Frame size (427 x 240 like SSv2).
    pool_clips : int
        Distinct textured clips rendered (each ``max_frames`` long); videos are windows of them.
    quality : int
        Pillow JPEG quality.
    num_shards : int
        Shards written (at least as many as loader workers, so every worker reads whole shards).
    seed : int
        Seed of the pool and of the video lengths, windows and labels.
    """

    num_videos: int
    min_frames: int = 30
    max_frames: int = 60
    width: int = 427
    height: int = 240
    pool_clips: int = 16
    quality: int = JPEG_QUALITY
    num_shards: int = 32
    seed: int = 0


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode one uint8 (H, W, 3) RGB frame as JPEG bytes with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def map_in_processes(function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """Map `function` over `items` in `workers` forked processes (in this process when workers <= 1)."""
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with context.Pool(min(workers, len(items))) as pool:
        return pool.map(function, items, chunksize=max(1, len(items) // (4 * workers)))


def render_pool_clip(job: tuple[int, ThroughputSpec]) -> list[bytes]:
    """Render pool clip `index` (textured, ``max_frames`` long) and return its JPEG frames."""
    index, spec = job
    class_index = index % len(CLASS_TEMPLATES)
    rng = clip_rng(spec.seed, class_index, index)
    frames = render_clip(class_index, rng, spec.max_frames, spec.width, spec.height, textured=True)
    return [encode_jpeg(frame, spec.quality) for frame in frames]


def assemble_videos(pool: Sequence[Sequence[bytes]], spec: ThroughputSpec) -> list[dict[str, Any]]:
    """Cut `spec.num_videos` videos out of the pool: random length, random pool clip, random window, random label."""
    rng = np.random.default_rng([spec.seed, 0x7B0])
    videos = []
    for index in range(spec.num_videos):
        length = int(rng.integers(spec.min_frames, spec.max_frames + 1))
        clip = pool[int(rng.integers(len(pool)))]
        start = int(rng.integers(len(clip) - length + 1))
        videos.append(
            {
                "id": str(index + 1),
                "label": int(rng.integers(THROUGHPUT_NUM_CLASSES)),
                "template": THROUGHPUT_TEMPLATE,
                "frames": list(clip[start : start + length]),
                "width": spec.width,
                "height": spec.height,
            }
        )
    return videos


def make_throughput_shards(out_dir: Path, spec: ThroughputSpec, workers: int = 1) -> dict[str, Any]:
    """Write the throughput shards (split "train") and return a summary of what was written.

    Returns
    -------
    dict
        {"videos", "frames", "shards", "mean_jpeg_bytes", "bytes", "render_s", "write_s", "spec"}.
    """
    if spec.min_frames < 1 or spec.max_frames < spec.min_frames or spec.num_videos < 1:
        raise ValueError(f"throughput shards: bad sizes {spec}; need 1 <= min_frames <= max_frames, num_videos >= 1")
    started = time.perf_counter()
    pool = map_in_processes(render_pool_clip, [(index, spec) for index in range(spec.pool_clips)], workers)
    rendered = time.perf_counter()
    videos = assemble_videos(pool, spec)
    manifest = write_jpeg_split(Path(out_dir), THROUGHPUT_SPLIT, videos, spec.num_shards, {"gpu_check": asdict(spec)})
    pool_sizes = [len(jpeg) for clip in pool for jpeg in clip]
    return {
        "videos": manifest["num_samples"],
        "frames": manifest["num_frames"],
        "shards": len(manifest["shards"]),
        "bytes": sum(shard["bytes"] for shard in manifest["shards"]),
        "mean_jpeg_bytes": float(np.mean(pool_sizes)),
        "render_s": rendered - started,
        "write_s": time.perf_counter() - rendered,
        "spec": asdict(spec),
    }


def render_temporal_clip(job: tuple[Any, int, int, int]) -> list[bytes]:
    """Render one temporal-class clip of `preprocess.synthetic` (plan, size, seed, quality) as JPEG frames."""
    plan, size, seed, quality = job
    rng = clip_rng(seed, plan.template_index, plan.index)
    frames = render_clip(plan.template_index, rng, plan.num_frames, size, size)
    return [encode_jpeg(frame, quality) for frame in frames]


def make_temporal_shards(
    out_dir: Path,
    videos_per_class: int,
    size: int = 32,
    num_frames: int = TEMPORAL_FRAMES,
    seed: int = 0,
    workers: int = 1,
) -> dict[str, Any]:
    """Write train and validation shards of the synthetic temporal classes (80 / 20 split per class).

    Returns
    -------
    dict
        {"classes", "size", "frames_per_video", "train": videos, "validation": videos, "seconds"}.
    """
    started = time.perf_counter()
    plans = [
        plan
        for plan in plan_dataset(videos_per_class, num_frames, TEMPORAL_SPLIT_FRACTIONS, seed)
        if plan.split in TEMPORAL_SPLITS
    ]
    encoded = map_in_processes(render_temporal_clip, [(plan, size, seed, JPEG_QUALITY) for plan in plans], workers)
    settings = {"gpu_check_temporal": {"videos_per_class": videos_per_class, "size": size, "seed": seed}}
    summary: dict[str, Any] = {"classes": len(CLASS_TEMPLATES), "size": size, "frames_per_video": num_frames}
    for split in TEMPORAL_SPLITS:
        videos = [
            {"id": plan.video_id, "label": plan.label, "template": CLASS_TEMPLATES[plan.template_index],
             "frames": frames, "width": size, "height": size}
            for plan, frames in zip(plans, encoded)
            if plan.split == split
        ]  # fmt: skip
        shards = max(1, min(len(videos) // VIDEOS_PER_SHARD, 16))
        summary[split] = write_jpeg_split(Path(out_dir), split, videos, shards, settings)["num_samples"]
    summary["seconds"] = time.perf_counter() - started
    return summary


# Samples and batches drawn from the shards, the same way for every decode backend


def select_samples(shards: Path, count: int, crop: int, seed: int, frames: Sequence[int]) -> list[Any]:
    """Read `count` videos of the train split and choose frames and crop boxes as the loader workers do."""
    from data_pipeline.loader import select_sample
    from data_pipeline.options import PipelineConfig
    from data_pipeline.stream import iterate_tar, read_split

    config = PipelineConfig(frames=tuple(frames), batch_size=count, train=True, crop_size=crop, seed=seed)
    rng = np.random.default_rng([seed, 0x5E1])
    samples: list[Any] = []
    for entry in read_split(shards, "train"):
        for raw in iterate_tar(entry.path):
            samples.append(select_sample(raw, entry.path, config, rng, check_headers=True))
            if len(samples) == count:
                return samples
    return samples


def dali_version() -> str | None:
    """nvidia.dali's version, or None when it does not import."""
    try:
        import nvidia.dali
    except ImportError:
        return None
    return str(nvidia.dali.__version__)


def backend_device(backend: str, device: torch.device, smoke: bool) -> torch.device | None:
    """Where a backend runs: the CUDA device, the CPU for an in-worker backend and in smoke runs, else None."""
    from data_pipeline.decode import DECODERS

    decoder = DECODERS[backend]
    if not decoder.available():
        return None
    if not decoder.needs_cuda:
        return torch.device("cpu")
    if device.type == "cuda":
        return device
    return torch.device("cpu") if smoke else None


def backend_unavailable_reason(backend: str) -> str:
    """Why a GPU backend cannot run here."""
    from data_pipeline.decode import DECODERS

    if not DECODERS[backend].available():
        return f"{backend} does not import (for dali: install nvidia-dali for the machine's CUDA version)"
    return "needs CUDA"


class BatchDecoder:
    """One backend turning a list of selected samples into a batch in the training layout."""

    def __init__(self, backend: str, device: torch.device, max_frames: int) -> None:
        from data_pipeline.decode import make_decoder

        self.backend = backend
        self.device = device
        self.decoder = make_decoder(backend, device, max_frames)

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        """Decode, augment and collate `samples`: {"videos": {T: (B, T, 3, S, S)}, "label", "id", "views"}.

        The loader's own batch path (the backend's `decode`, then `batch_on_device`, which normalises uint8 pixels
        on the device), so the timings are the training path's.
        """
        from data_pipeline.loader import batch_on_device

        return batch_on_device(self.decoder.decode(samples)[0], self.device)


def differences_255(reference: dict[int, torch.Tensor], other: dict[int, torch.Tensor]) -> dict[str, float]:
    """Mean and max absolute difference of two batches' normalised frames, on the 0-255 pixel scale."""
    from data_pipeline.augment import IMAGENET_STD

    scale = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0
    gaps = torch.cat(
        [((reference[frames].float().cpu() - other[frames].float().cpu()).abs() * scale).flatten() for frames in reference]
    )
    return {"mean_abs_255": gaps.mean().item(), "max_abs_255": gaps.max().item(), "values": int(gaps.numel())}
