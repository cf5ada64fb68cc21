"""The data sections of ``make gpu-check``: its shards, the decode backends against each other, decode speed.

Section 0 makes the shards (numpy + Pillow, no ffmpeg: ``benchmarks.gpu_check_data``); section 1's backend half
compares the torchvision and dali backends with the cpu backend on identical samples and crop boxes; section 2
measures decode + augment frames/s of every backend into the training layout. ``benchmarks.gpu_check`` runs them
beside the model and training sections.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_check_data import (
    BatchDecoder,
    ThroughputSpec,
    backend_device,
    backend_unavailable_reason,
    differences_255,
    make_temporal_shards,
    make_throughput_shards,
    select_samples,
)
from benchmarks.gpu_report import Context, SectionSkipped, guarded, run_for
from data_pipeline.decode import DECODERS

FFN_FRAMES = (4, 8, 16)
FRAMES_PER_FFN_VIDEO = sum(FFN_FRAMES)  # frames one FFN training video feeds the network
BACKENDS = tuple(DECODERS)  # registry order: dali, torchvision, cpu


def section_shards(context: Context, seconds: float) -> dict[str, Any]:
    """Make the throughput shards and the temporal shards (numpy + Pillow, forked processes)."""
    sizes = context.sizes
    spec = ThroughputSpec(
        num_videos=sizes.num_videos, min_frames=sizes.min_frames, max_frames=sizes.max_frames,
        width=sizes.frame_width, height=sizes.frame_height, pool_clips=sizes.pool_clips,
        num_shards=sizes.num_shards, seed=context.seed,
    )  # fmt: skip
    workers = max(1, os.cpu_count() or 1) if not context.smoke else 1
    throughput_dir = context.work / "throughput"
    throughput = make_throughput_shards(throughput_dir, spec, workers)
    context.shards["throughput"] = throughput_dir
    temporal_dir = context.work / "temporal"
    temporal = make_temporal_shards(
        temporal_dir, sizes.temporal_videos_per_class, sizes.temporal_size, seed=context.seed, workers=workers
    )
    context.shards["temporal"] = temporal_dir
    context.temporal_classes = int(temporal["classes"])
    return {"throughput": throughput, "temporal": temporal, "folder": str(context.work)}


def backend_parity(context: Context) -> dict[str, Any]:
    """torchvision and dali against the cpu backend on the same samples and crop boxes."""
    sizes = context.sizes
    shards = context.need_shards("throughput")
    samples = select_samples(shards, sizes.parity_videos, sizes.crop, context.seed, FFN_FRAMES)
    max_frames = len(samples) * FRAMES_PER_FFN_VIDEO
    reference = BatchDecoder("cpu", torch.device("cpu"), max_frames)(samples)["videos"]
    results: dict[str, Any] = {"videos": len(samples), "crop": sizes.crop}
    for backend in ("torchvision", "dali"):
        device = backend_device(backend, context.device, context.smoke)
        if device is None:
            results[backend] = {"status": "skipped", "reason": backend_unavailable_reason(backend)}
            continue

        def compare_backend(backend: str = backend, device: torch.device = device) -> dict[str, Any]:
            frames = BatchDecoder(backend, device, max_frames)(samples)["videos"]
            return {"status": "ok", "device": str(device), **differences_255(reference, frames)}

        results[backend] = guarded(compare_backend)
    return results


def decode_rate(decoder: BatchDecoder, samples: Sequence[Any], batch: int, seconds: float) -> dict[str, Any]:
    """Decode + augment batches of `batch` videos cyclically for `seconds`; frames per second."""
    groups = [samples[start : start + batch] for start in range(0, len(samples) - batch + 1, batch)]
    if not groups:
        raise SectionSkipped(f"fewer than {batch} selected videos for the decode benchmark")
    position = {"index": 0, "decoded": 0, "videos": 0}

    def step() -> None:
        group = groups[position["index"] % len(groups)]
        decoder(group)
        position["index"] += 1
        position["decoded"] += sum(len(sample.jpegs) for sample in group)
        position["videos"] += len(group)

    for group in groups[:2]:
        decoder(group)
    position.update(index=0, decoded=0, videos=0)
    steps, elapsed = run_for(step, seconds, 1, decoder.device)
    output_frames = position["videos"] * FRAMES_PER_FFN_VIDEO
    return {
        "batch_videos": batch, "batches": steps, "seconds": elapsed,
        "decoded_frames_per_s": position["decoded"] / elapsed, "output_frames_per_s": output_frames / elapsed,
        "videos_per_s": position["videos"] / elapsed,
    }  # fmt: skip


def section_decode(context: Context, seconds: float) -> dict[str, Any]:
    """Section 2: decode + augment frames/s of each backend into the training layout (one process)."""
    sizes = context.sizes
    shards = context.need_shards("throughput")
    samples = select_samples(shards, sizes.decode_videos, sizes.crop, context.seed, FFN_FRAMES)
    plan = []
    for backend in BACKENDS:
        batches = sizes.decode_batches if backend != "cpu" else sizes.decode_batches[:1]
        if backend_device(backend, context.device, context.smoke) is not None:
            plan += [(backend, batch) for batch in batches]
    per_run = 0.75 * seconds / max(1, len(plan))
    results: dict[str, Any] = {
        "videos_selected": len(samples),
        "mean_decoded_frames_per_video": float(np.mean([len(sample.jpegs) for sample in samples])),
        "note": "decoded = JPEGs decoded (unique frames); output = frames delivered (sum of the frame counts per "
                "video); the cpu backend is one process here (the loader runs it in its workers)",
    }  # fmt: skip
    for backend in BACKENDS:
        if backend_device(backend, context.device, context.smoke) is None:
            results[backend] = {"status": "skipped", "reason": backend_unavailable_reason(backend)}
    for backend, batch in plan:
        device = backend_device(backend, context.device, context.smoke)
        entry = results.setdefault(backend, {"device": str(device), "runs": {}, "status": "ok"})

        def measure(backend: str = backend, device: torch.device = device, batch: int = batch) -> dict[str, Any]:
            decoder = BatchDecoder(backend, device, batch * FRAMES_PER_FFN_VIDEO)
            return {"status": "ok", **decode_rate(decoder, samples, batch, per_run)}

        entry["runs"][str(batch)] = guarded(measure)
        if entry["runs"][str(batch)]["status"] != "ok":
            entry["status"] = "failed"
    return results
