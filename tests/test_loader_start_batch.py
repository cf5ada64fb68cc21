"""A training pass that starts in the middle of an epoch (`VideoLoader.set_epoch(epoch, start_batch)`, what a run
resumed from a mid-epoch checkpoint uses): it yields exactly the batches of an uninterrupted pass from there on,
for any number of loader workers and ranks, and never decodes the batches it leaves out."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pipeline_helpers import corrupt, make_videos

from data_pipeline import build_loader
from data_pipeline.loader import batches_to_skip

SHARD_SIZES = (7, 2, 5, 6)  # 20 videos in uneven shards
EPOCH = 1


@pytest.fixture(scope="module")
def videos() -> list[dict]:
    """20 tiny videos of 5 and 7 frames."""
    return make_videos(sum(SHARD_SIZES), (5, 7), width=16, height=16)


@pytest.fixture(scope="module")
def shards(tiny_shards: Callable[..., Path], videos: list[dict]) -> Path:
    """The videos in training shards of uneven sizes."""
    return tiny_shards("start_batch", train=(videos, SHARD_SIZES))


def loader_of(folder: Path, workers: int, rank: int = 0, world_size: int = 1) -> object:
    """A training loader of 2-video batches at 2 and 4 frames, on the CPU."""
    return build_loader(
        folder, "train", frames=(2, 4), batch_size=2, train=True, decode="cpu", device="cpu", num_workers=workers,
        crop_size=8, multi_scale=False, rank=rank, world_size=world_size, seed=5,
    )  # fmt: skip


def pass_of(loader: object, start_batch: int = 0) -> list[tuple[list[str], dict[int, torch.Tensor]]]:
    """The (ids, videos) of every batch of one pass of the epoch, starting at `start_batch`."""
    loader.set_epoch(EPOCH, start_batch=start_batch)
    return [(batch["id"], {frames: videos.clone() for frames, videos in batch["videos"].items()}) for batch in loader]


def same_batches(first: list, second: list) -> bool:
    """True when two passes hold the same ids and bitwise the same videos, batch by batch."""
    return len(first) == len(second) and all(
        ids_a == ids_b and all(torch.equal(videos_a[f], videos_b[f]) for f in videos_a)
        for (ids_a, videos_a), (ids_b, videos_b) in zip(first, second)
    )


def test_workers_take_the_batches_in_turn():
    assert [batches_to_skip(5, worker, 3) for worker in range(3)] == [2, 2, 1]  # batches 0..4: w0 w1 w2 w0 w1
    assert [batches_to_skip(0, worker, 2) for worker in range(2)] == [0, 0]
    assert batches_to_skip(4, 0, 1) == 4


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "world_size"), [(0, 1), (1, 1), (3, 1), (2, 2)])
def test_a_pass_from_any_batch_is_the_rest_of_the_uninterrupted_pass(shards, workers, world_size):
    for rank in range(world_size):
        loader = loader_of(shards, workers, rank, world_size)
        whole = pass_of(loader)
        assert len(whole) == len(loader) >= 4
        for start in sorted({0, 1, 2, len(whole) - 1, len(whole)}):
            assert same_batches(pass_of(loader, start), whole[start:]), (workers, rank, start)
        assert same_batches(pass_of(loader), whole), "the next pass starts at the epoch's first batch again"


def test_left_out_batches_are_not_decoded(tiny_shards, videos, shards):
    first_ids = pass_of(loader_of(shards, workers=2))[0][0]
    broken = [corrupt(copy.deepcopy(video)) if video["id"] == first_ids[0] else video for video in videos]
    folder = tiny_shards("start_batch_corrupt", train=(broken, SHARD_SIZES))
    whole_loader, resumed_loader = loader_of(folder, workers=2), loader_of(folder, workers=2)
    whole = pass_of(whole_loader)
    resumed = pass_of(resumed_loader, start_batch=1)
    assert same_batches(resumed, whole[1:])
    assert whole_loader.stats()["corrupt_videos_replaced"] == 1  # decoding the first batch meets the broken video
    assert resumed_loader.stats()["corrupt_videos_replaced"] == 0  # the resumed pass never decodes it
    assert resumed_loader.stats()["batches"] == len(whole) - 1


def test_start_batch_outside_the_epoch_or_in_evaluation_is_refused(shards):
    loader = loader_of(shards, workers=0)
    with pytest.raises(ValueError, match="outside the epoch"):
        loader.set_epoch(EPOCH, start_batch=len(loader) + 1)
    with pytest.raises(ValueError, match="outside the epoch"):
        loader.set_epoch(EPOCH, start_batch=-1)
    evaluation = build_loader(shards, "train", frames=(2,), batch_size=2, train=False, decode="cpu", device="cpu",
                              num_workers=0, crop_size=8)
    with pytest.raises(ValueError, match="evaluation pass"):
        evaluation.set_epoch(0, start_batch=1)
