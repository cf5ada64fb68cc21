"""Two ranks x two loader workers under gloo on the CPU, over shards of uneven sizes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pipeline_helpers import corrupt, make_videos, write_split

WORLD_SIZE = 2
WORKERS = 2
BATCH = 2
TRAIN_SHARD_SIZES = (9, 3, 7, 2, 6)  # 27 videos in 5 uneven shards: each slot reads its exact run of them
EVAL_SHARD_SIZES = (6, 4, 3)  # 13 videos, 3 shards < 4 slots: samples dealt to slots
CORRUPT_ID = "e0005"


def run_rank(rank: int, shards: str, out_dir: str) -> None:
    """One rank: two training epochs and one evaluation pass; writes what it saw as JSON."""
    from common.distributed import reduce_counts
    from data_pipeline import build_loader

    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD_SIZE)
    try:
        options = dict(
            shards=shards, frames=(4, 8), batch_size=BATCH, decode="cpu", device="cpu", num_workers=WORKERS,
            crop_size=16, test_resize=16, multi_scale=False,
        )  # fmt: skip
        train_loader = build_loader(split="train", train=True, **options)
        epochs = []
        for epoch in (0, 1):
            train_loader.set_epoch(epoch)
            epochs.append([batch["id"] for batch in train_loader])
        eval_loader = build_loader(split="validation", train=False, **options)
        eval_ids = [video for batch in eval_loader for video in batch["id"]]
        replaced = eval_loader.stats()["corrupt_videos_replaced"]
        totals = reduce_counts([len(eval_ids), replaced])
        record = {
            "len_train": len(train_loader), "epochs": epochs, "eval_ids": eval_ids, "len_eval": len(eval_loader),
            "eval_batches": eval_loader.stats()["batches"], "totals": totals,
        }  # fmt: skip
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Run the two ranks once and return their records."""
    root = tmp_path_factory.mktemp("ddp")
    shards = root / "shards"
    write_split(shards, "train", make_videos(27, (20, 9)), TRAIN_SHARD_SIZES)
    evaluation = make_videos(13, (20, 9), prefix="e")
    corrupt(evaluation[5], b"\xff\xd8 broken")
    write_split(shards, "validation", evaluation, EVAL_SHARD_SIZES)
    mp.start_processes(run_rank, args=(str(shards), str(root)), nprocs=WORLD_SIZE, join=True, start_method="fork")
    return [json.loads((root / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


@pytest.mark.slow
def test_training_gives_equal_full_batches_on_every_rank(ranks: list[dict]) -> None:
    expected = 27 // (WORLD_SIZE * BATCH)
    for record in ranks:
        assert record["len_train"] == expected
        for epoch in record["epochs"]:
            assert len(epoch) == expected and all(len(batch) == BATCH for batch in epoch)


@pytest.mark.slow
def test_ranks_read_disjoint_videos_and_epochs_differ(ranks: list[dict]) -> None:
    for epoch in (0, 1):
        first = {video for batch in ranks[0]["epochs"][epoch] for video in batch}
        second = {video for batch in ranks[1]["epochs"][epoch] for video in batch}
        assert first and second and not first & second
    for record in ranks:
        assert record["epochs"][0] != record["epochs"][1]


@pytest.mark.slow
def test_evaluation_sees_every_video_once_and_replaces_the_corrupt_one(ranks: list[dict]) -> None:
    seen = Counter(video for record in ranks for video in record["eval_ids"])
    expected = {f"e{index:04d}" for index in range(13)} - {CORRUPT_ID}
    assert set(seen) == expected
    assert sum(seen.values()) == 13 and sorted(seen.values())[-1] == 2  # the replacement's donor appears twice
    for record in ranks:
        assert record["totals"] == [13.0, 1.0]
        assert record["len_eval"] == record["eval_batches"]
    assert torch.distributed.is_available()
