"""The DALI pipeline in CPU mode (Pipeline(device_id=None)) matches the cpu backend on the same samples and crops."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import corrupt, make_videos

from data_pipeline.augment import IMAGENET_STD
from data_pipeline.decode import CpuDecoder, DaliDecoder
from data_pipeline.loader import select_sample
from data_pipeline.options import PipelineConfig
from data_pipeline.stream import iterate_tar, read_split

pytest.importorskip("nvidia.dali")
pytestmark = pytest.mark.dali

MEAN_ABS_LIMIT = 1.0
MAX_ABS_LIMIT = 16.0
TRAIN_FRAMES = (4, 8, 16)


@pytest.fixture(scope="module")
def shard_path(tiny_shards: Callable[..., Path]) -> Path:
    """One shard of 5 textured-enough 128x96 videos, one of them with a corrupt frame."""
    videos = make_videos(5, (24, 10), width=128, height=96, prefix="d")
    corrupt(videos[3], b"\xff\xd8\xff garbage")
    return read_split(tiny_shards("dali_shards", train=(videos, (5,))), "train")[0].path


def selected(shard: Path, train: bool, crop_size: int, **options) -> list:
    """Sample frames and crop boxes for every video of the shard, as the loader workers do."""
    config = PipelineConfig(
        frames=TRAIN_FRAMES, batch_size=5, train=train, crop_size=crop_size,
        test_resize=options.pop("test_resize", 96), **options,
    )  # fmt: skip
    rng = np.random.default_rng(11)
    return [select_sample(raw, shard, config, rng, check_headers=True) for raw in iterate_tar(shard)]


def differences_255(first: dict, second: dict) -> tuple[float, float]:
    """Mean and max absolute difference of two batches' frames on the 0-255 pixel scale."""
    scale = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0
    gaps = torch.cat([((first[frames] - second[frames]).abs() * scale).flatten() for frames in TRAIN_FRAMES])
    return gaps.mean().item(), gaps.max().item()


@pytest.mark.parametrize(
    "train, crop_size, options",
    [
        (True, 24, {}),  # multi-scale crops of 96x96..63x63 scaled down about 3x
        (True, 112, {"flip": True}),  # scaled up, some mirrored
        (False, 40, {"test_crops": 3, "test_clips": 2, "test_resize": 48}),
    ],
)
def test_dali_cpu_mode_matches_cpu_backend(shard_path: Path, train: bool, crop_size: int, options: dict) -> None:
    samples = selected(shard_path, train, crop_size, **options)
    cpu_batch, cpu_replaced = CpuDecoder(normalise=True).decode(samples)
    decoder = DaliDecoder(torch.device("cpu"), max_frames=5 * 6 * sum(TRAIN_FRAMES), num_threads=1)
    dali_batch, dali_replaced = decoder.decode(samples)
    assert cpu_replaced == dali_replaced == 1
    assert cpu_batch["id"] == dali_batch["id"] and "d0003" not in dali_batch["id"]
    for frames in TRAIN_FRAMES:
        assert dali_batch["videos"][frames].shape == cpu_batch["videos"][frames].shape
    mean_abs, max_abs = differences_255(cpu_batch["videos"], dali_batch["videos"])
    print(f"DALI (CPU mode) vs cpu backend, crop {crop_size}: mean abs {mean_abs:.3f}, max abs {max_abs:.3f} (0-255)")
    assert mean_abs <= MEAN_ABS_LIMIT and max_abs <= MAX_ABS_LIMIT


def test_dali_retries_video_by_video_when_the_batch_fails(shard_path: Path) -> None:
    """A video whose headers pass but whose data is cut short fails DALI's batch run; decoded video by video, the
    batch equals the one where that video is left out for its unreadable headers (the same replacement)."""
    samples = selected(shard_path, True, 24)
    corrupt = [sample.video_id for sample in samples].index("d0003")
    cut_short = samples[0].jpegs[0][: len(samples[0].jpegs[0]) // 2]
    retried = list(samples)
    retried[corrupt] = dataclasses.replace(
        samples[corrupt], jpegs=[cut_short] * len(samples[corrupt].jpegs), header_ok=None
    )
    decoder = DaliDecoder(torch.device("cpu"), max_frames=5 * sum(TRAIN_FRAMES), num_threads=1)
    whole, whole_replaced = decoder.decode(samples)
    video_by_video, retried_replaced = decoder.decode(retried)
    assert whole_replaced == retried_replaced == 1 and whole["id"] == video_by_video["id"]
    assert "d0003" not in whole["id"]
    for frames in TRAIN_FRAMES:
        assert torch.equal(whole["videos"][frames], video_by_video["videos"][frames])


def test_dali_prefetch_thread_gives_the_same_batches(shard_path: Path) -> None:
    """The loader's background decode thread (DALI run from that thread) yields the synchronous batches."""
    from data_pipeline import build_loader
    from data_pipeline.loader import STATS_KEYS
    from data_pipeline.prefetch import THREAD_NAME

    runs = {}
    for depth in (0, 2):
        loader = build_loader(
            shard_path.parent, "train", TRAIN_FRAMES, 2, decode="cpu", device="cpu", num_workers=0, crop_size=24, seed=3,
            prefetch=depth,
        )  # fmt: skip
        loader = dataclasses.replace(
            loader, decoder=DaliDecoder(torch.device("cpu"), max_frames=2 * sum(TRAIN_FRAMES), num_threads=1),
            totals={key: 0 for key in STATS_KEYS},
        )
        runs[depth] = (list(loader), loader.stats())
    assert runs[0][1] == runs[2][1] and runs[2][1]["batches"] == 2
    for plain, ahead in zip(runs[0][0], runs[2][0], strict=True):
        assert plain["id"] == ahead["id"]
        assert all(torch.equal(plain["videos"][frames], ahead["videos"][frames]) for frames in TRAIN_FRAMES)
    assert not [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]
