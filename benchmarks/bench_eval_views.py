"""Test views of frames stored at sizes other than short side 256: our crop-then-resize against the official chain.

The official test chain resizes the whole frame to short side 256 with PIL's bilinear filter (antialiased when
shrinking; torchvision ``Resize`` on a PIL image) and then crops (``CenterCrop`` or TSM's GroupFullResSample). Ours
(data_pipeline.augment.eval_boxes) maps the crop to a box of stored pixels and resizes only that box, bilinear
without antialiasing, as every backend does. For each stored size and crop protocol this reports, against the
official chain's pixels (0-255): the mean and max absolute difference of ours and of the alternative that follows
the official order (torch ``interpolate(antialias=True)`` of the whole frame, then the official crop), and the time
per 16-frame clip of each (decoded uint8 frames in, uint8 views out; one torch thread, best of the repeats,
interleaved). At 455x256 both are exact slices. The "official" views here take their crop origins from our own
data_pipeline.augment functions (centre_crop_origin, full_res_origins); that those origins are the official ones is
checked against an independent rebuild of the official chain in tests/test_eval_protocols.py.

    .venv/bin/python -m benchmarks.bench_eval_views --out runs/bench
    .venv/bin/python -m benchmarks.bench_eval_views --out runs/bench --quick    # smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as functional
import torchvision.transforms.functional as tv_functional
from PIL import Image

from benchmarks.gpu_check_data import encode_jpeg
from data_pipeline.augment import (
    centre_crop_origin,
    crop_frames,
    eval_boxes,
    full_res_origins,
    resize,
    scaled_size,
)
from data_pipeline.decode import decode_jpegs_torchvision
from common.atomic import write_json_atomic
from preprocess.synthetic import render_clip

STORED_SIZES = ((455, 256), (640, 360), (427, 240), (320, 180))
SCALE_SIZE = 256
PROTOCOLS = {"centre_224": (1, 224), "three_crops_224": (3, 224), "three_crops_full_res_256": (3, 256)}
CLIP_FRAMES = 16
VIDEOS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_eval_views.json")
    parser.add_argument("--quick", action="store_true", help="one video, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args(argv)


def clip_jpegs(width: int, height: int, seed: int) -> list[bytes]:
    """A synthetic 16-frame clip of the stored size, JPEG-encoded."""
    frames = render_clip(seed % 12, np.random.default_rng(seed), num_frames=CLIP_FRAMES, width=width, height=height)
    return [encode_jpeg(frame) for frame in frames]


def crop_origins(width: int, height: int, crops: int, crop: int) -> list[tuple[int, int]]:
    """The official crop origins in a frame of the given (resized) size."""
    return [centre_crop_origin(width, height, crop)] if crops == 1 else full_res_origins(width, height, crop)


def official_views(jpegs: list[bytes], crops: int, crop: int) -> torch.Tensor:
    """The official chain's pixels: PIL decode, torchvision Resize(256) on PIL, the official crops; (V, T, 3, S, S)."""
    images = [tv_functional.resize(Image.open(io.BytesIO(jpeg)).convert("RGB"), SCALE_SIZE) for jpeg in jpegs]
    width, height = images[0].size
    views = [
        torch.stack([torch.from_numpy(np.array(image.crop((x, y, x + crop, y + crop)))) for image in images])
        for x, y in crop_origins(width, height, crops, crop)
    ]
    return torch.stack(views).permute(0, 1, 4, 2, 3)


def ours(frames: list[torch.Tensor], crops: int, crop: int) -> torch.Tensor:
    """data_pipeline's views: each stored-pixel box cropped, then resized (uint8, no antialiasing)."""
    height, width = frames[0].shape[-2:]
    boxes = eval_boxes(width, height, crop, SCALE_SIZE, crops)
    return torch.stack([resize(crop_frames(frames, range(len(frames)), box), box) for box in boxes])


def whole_frame_first(frames: list[torch.Tensor], crops: int, crop: int) -> torch.Tensor:
    """The official order in torch: the whole frame resized with antialiasing (uint8), then the official crops."""
    height, width = frames[0].shape[-2:]
    scaled_width, scaled_height = scaled_size(width, height, SCALE_SIZE)
    whole = torch.stack(frames)
    if (scaled_width, scaled_height) != (width, height):
        whole = functional.interpolate(
            whole, size=(scaled_height, scaled_width), mode="bilinear", align_corners=False, antialias=True
        )
    origins = crop_origins(scaled_width, scaled_height, crops, crop)
    return torch.stack([whole[:, :, y : y + crop, x : x + crop] for x, y in origins])


METHODS: dict[str, Callable[[list[torch.Tensor], int, int], torch.Tensor]] = {
    "ours_crop_then_resize": ours,
    "whole_frame_antialiased_then_crop": whole_frame_first,
}


def gap(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """Mean and max absolute difference on the 0-255 scale."""
    difference = (first.float() - second.float()).abs()
    return round(difference.mean().item(), 3), round(difference.max().item(), 1)


def best_times(frames: list[torch.Tensor], crops: int, crop: int, repeats: int) -> dict[str, float]:
    """Milliseconds per clip of each method, best of `repeats`, the methods interleaved."""
    best = {name: float("inf") for name in METHODS}
    for _ in range(repeats):
        for name, method in METHODS.items():
            start = time.perf_counter()
            method(frames, crops, crop)
            best[name] = min(best[name], (time.perf_counter() - start) * 1000.0)
    return {name: round(value, 2) for name, value in best.items()}


def measure(width: int, height: int, videos: int, repeats: int) -> dict[str, Any]:
    """Every protocol's gaps and times at one stored size."""
    clips = [clip_jpegs(width, height, seed) for seed in range(videos)]
    decoded = [decode_jpegs_torchvision(jpegs, torch.device("cpu")) for jpegs in clips]
    results = {}
    for protocol, (crops, crop) in PROTOCOLS.items():
        official = [official_views(jpegs, crops, crop) for jpegs in clips]
        entry: dict[str, Any] = {}
        for name, method in METHODS.items():
            produced = torch.cat([method(frames, crops, crop) for frames in decoded])
            entry[f"{name}_mean_abs"], entry[f"{name}_max_abs"] = gap(produced, torch.cat(official))
        entry["ms_per_clip"] = best_times(decoded[0], crops, crop, repeats)
        results[protocol] = entry
    return results


def print_table(figures: dict[str, Any]) -> None:
    """One line per stored size and protocol."""
    print(f"{'stored':>8} {'protocol':>26} {'ours mean/max':>14} {'whole-frame mean/max':>21} {'ms ours / whole':>16}")
    for size, protocols in figures["sizes"].items():
        for protocol, entry in protocols.items():
            times = entry["ms_per_clip"]
            print(
                f"{size:>8} {protocol:>26} "
                f"{entry['ours_crop_then_resize_mean_abs']:>7.3f}/{entry['ours_crop_then_resize_max_abs']:<6.0f} "
                f"{entry['whole_frame_antialiased_then_crop_mean_abs']:>13.3f}/"
                f"{entry['whole_frame_antialiased_then_crop_max_abs']:<7.0f} "
                f"{times['ours_crop_then_resize']:>7.2f} / {times['whole_frame_antialiased_then_crop']:.2f}"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure every stored size and write bench_eval_views.json."""
    args = parse_args(argv)
    videos, repeats = (1, 1) if args.quick else (VIDEOS, args.repeats)
    torch.set_num_threads(1)
    figures = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "settings": {"videos": videos, "clip_frames": CLIP_FRAMES, "repeats": repeats, "quick": args.quick},
        "sizes": {f"{width}x{height}": measure(width, height, videos, repeats) for width, height in STORED_SIZES},
    }
    print_table(figures)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "bench_eval_views.json", json.loads(json.dumps(figures)))
    return figures


if __name__ == "__main__":
    main()
