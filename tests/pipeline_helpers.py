"""Small shard fixtures for the data_pipeline tests: numpy frames -> JPEG -> packed shards of chosen sizes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from preprocess import shard_format

FIXTURE_SETTINGS = {"purpose": "data_pipeline tests"}
JPEG_QUALITY = 90
NUM_CLASSES = 12


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode one uint8 (H, W, 3) frame as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def render_frames(index: int, num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Synthetic frames of one clip: preprocess.synthetic.render_clip when available, else smooth random frames."""
    rng = np.random.default_rng([seed, index])
    try:
        from preprocess.synthetic import render_clip

        return render_clip(index % NUM_CLASSES, rng, num_frames=num_frames, width=width, height=height)
    except ImportError:
        base = rng.integers(0, 256, size=(1, height, width, 3))
        drift = np.arange(num_frames).reshape(-1, 1, 1, 1) * 3
        return ((base + drift) % 256).astype(np.uint8)


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
                "frames": [encode_jpeg(frame) for frame in frames],
                "width": width,
                "height": height,
            }
        )
    return videos


def write_split(out_dir: Path, split: str, videos: Sequence[dict[str, Any]], shard_sizes: Sequence[int]) -> dict:
    """Write `videos` as shards holding `shard_sizes` videos each (uneven sizes allowed), plus the manifest."""
    if sum(shard_sizes) != len(videos):
        raise ValueError(f"shard sizes {list(shard_sizes)} do not add up to {len(videos)} videos")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = shard_format.settings_hash(FIXTURE_SETTINGS)
    start = 0
    for index, size in enumerate(shard_sizes):
        members: list[tuple[str, bytes]] = []
        chunk = videos[start : start + size]
        for video in chunk:
            members += shard_format.encode_sample(
                video["id"], video["label"], video["template"], video["frames"], video["width"], video["height"]
            )
        path = out_dir / shard_format.shard_name(split, index)
        shard_format.write_tar_atomic(path, members)
        shard_format.write_sidecar(path, size, sum(len(video["frames"]) for video in chunk), [], digest)
        start += size
    return shard_format.assemble_manifest(out_dir, split, len(shard_sizes), FIXTURE_SETTINGS)
