"""Small shards for the data_pipeline tests: numpy frames -> JPEG (Pillow) -> packed shards of chosen sizes.

tests/conftest.py turns these into fixtures; test modules import the functions for their own variations.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import shard_format
from preprocess.synthetic import render_clip

FIXTURE_SETTINGS = {"purpose": "data_pipeline tests"}
JPEG_QUALITY = 90
NUM_CLASSES = 12
CORRUPT_FRAME = b"\xff\xd8 not a jpeg"


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode one uint8 (H, W, 3) RGB frame as JPEG bytes with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def corrupt(video: dict[str, Any], payload: bytes = CORRUPT_FRAME) -> dict[str, Any]:
    """Replace every frame of `video` (in place) by `payload`, which no decoder reads; return the video."""
    video["frames"] = [payload] * len(video["frames"])
    return video


def render_frames(index: int, num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Synthetic frames of one clip (preprocess.synthetic.render_clip, class index % NUM_CLASSES)."""
    rng = np.random.default_rng([seed, index])
    return render_clip(index % NUM_CLASSES, rng, num_frames=num_frames, width=width, height=height)


def make_videos(
    count: int, frame_counts: Sequence[int], width: int = 32, height: int = 32, prefix: str = "v", seed: int = 0
) -> list[dict[str, Any]]:
    """Return `count` encoded videos {"id", "label", "template", "frames", "width", "height"} (cycling frame counts)."""
    videos = []
    for index in range(count):
        num_frames = int(frame_counts[index % len(frame_counts)])
        frames = render_frames(index, num_frames, width, height, seed)
        videos.append(
            {
                "id": f"{prefix}{index:04d}",
                "label": index % NUM_CLASSES,
                "template": f"class {index % NUM_CLASSES}",
                "frames": [encode_jpeg(frame, JPEG_QUALITY) for frame in frames],
                "width": width,
                "height": height,
            }
        )
    return videos


def write_split(out_dir: Path, split: str, videos: Sequence[dict[str, Any]], shard_sizes: Sequence[int]) -> dict:
    """Write `videos` as shards holding `shard_sizes` videos each (uneven sizes allowed), plus the manifest."""
    return shard_format.write_jpeg_split(out_dir, split, videos, len(shard_sizes), FIXTURE_SETTINGS, shard_sizes)
