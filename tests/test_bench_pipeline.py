"""The pipeline benchmark's baselines: the official transform chain and its per-frame variant agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.bench_pipeline import CROP_SIZE, HEIGHT, TRAIN_FRAMES, WIDTH, official_chain_clip, per_frame_clip
from data_pipeline.augment import IMAGENET_MEAN, IMAGENET_STD

NUM_FRAMES = 36


def write_frame_folder(folder: Path) -> Path:
    """A folder of NUM_FRAMES distinct textured JPEG frames named as the official extraction names them."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for index in range(NUM_FRAMES):
        pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{index + 1:05d}.jpg", quality=90)
    return folder


def test_both_baselines_give_the_same_normalised_clip(tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "video")
    chain = official_chain_clip(folder, NUM_FRAMES, np.random.default_rng(4))
    per_frame = per_frame_clip(folder, NUM_FRAMES, np.random.default_rng(4))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for frames in TRAIN_FRAMES:
        assert chain[frames].shape == (frames, 3, CROP_SIZE, CROP_SIZE)
        assert torch.equal(chain[frames], per_frame[frames])
        pixels = chain[frames] * std + mean  # back on the 0-1 scale: every value a JPEG level / 255
        assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
        torch.testing.assert_close(pixels * 255.0, (pixels * 255.0).round(), atol=1e-3, rtol=0)
    assert not torch.equal(chain[16][0], chain[16][-1])  # distinct frames were opened, not one repeated
