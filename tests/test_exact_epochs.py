"""Exact training epochs: every video once per epoch (but the few left out for equal full batches), on real shards."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from pipeline_helpers import make_videos, write_split

from data_pipeline import build_loader
from data_pipeline.stream import (
    ShardDataError,
    ShardEntry,
    Slot,
    train_batches_per_rank,
    train_dropped_per_rank,
    train_pieces,
)
from data_pipeline.tar_reader import iterate_samples
from shard_format import shard_name

NUM_VIDEOS = 26
SHARD_LAYOUTS = {
    "more shards than slots": (5, 1, 4, 3, 6, 2, 5),
    "fewer shards than slots": (17, 9),
    "one shard": (26,),
}


@pytest.fixture(scope="module")
def shard_folders(tiny_shards: Callable[..., Path]) -> dict[str, Path]:
    """The same 26 tiny videos written with each shard layout."""
    videos = make_videos(NUM_VIDEOS, (3, 5), width=16, height=16)
    return {name: tiny_shards("exact", train=(videos, sizes)) for name, sizes in SHARD_LAYOUTS.items()}


def epoch_ids(folder: Path, world_size: int, workers: int, batch: int, buffer: int, epoch: int) -> list[list[str]]:
    """Each rank's ids of one training epoch (ranks built side by side in this process); checks batch counts."""
    by_rank = []
    for rank in range(world_size):
        loader = build_loader(
            folder, "train", frames=(1,), batch_size=batch, train=True, decode="cpu", device="cpu",
            num_workers=workers, crop_size=8, multi_scale=False, shuffle_buffer=buffer, rank=rank,
            world_size=world_size, seed=3,
        )  # fmt: skip
        loader.set_epoch(epoch)
        batches = [batch_ids["id"] for batch_ids in loader]
        expected = NUM_VIDEOS // (world_size * batch)
        assert len(batches) == len(loader) == expected and all(len(ids) == batch for ids in batches)
        stats = loader.stats()
        assert stats["samples"] == expected * batch and stats["dropped_for_equal_batches"] == loader.dropped_per_epoch
        by_rank.append([video for ids in batches for video in ids])
    dropped_per_rank = [build_loader(
        folder, "train", frames=(1,), batch_size=batch, decode="cpu", device="cpu", num_workers=workers, rank=rank,
        world_size=world_size).dropped_per_epoch for rank in range(world_size)]  # fmt: skip
    assert sum(dropped_per_rank) == NUM_VIDEOS - world_size * (NUM_VIDEOS // (world_size * batch)) * batch
    assert max(dropped_per_rank) <= batch and sum(dropped_per_rank) < world_size * batch
    return by_rank


@pytest.mark.parametrize(
    ("layout", "world_size", "workers", "batch", "buffer"),
    [
        ("more shards than slots", 1, 0, 4, 1000),  # buffer larger than the split
        ("more shards than slots", 1, 0, 4, 1),
        ("more shards than slots", 1, 2, 4, 1),
        ("more shards than slots", 2, 2, 2, 256),
        ("fewer shards than slots", 2, 2, 3, 4),
        ("fewer shards than slots", 1, 2, 4, 1000),
        ("one shard", 2, 0, 4, 2),
        ("one shard", 1, 2, 5, 1),
    ],
)
def test_training_epoch_yields_every_video_once(shard_folders, layout, world_size, workers, batch, buffer):
    folder = shard_folders[layout]
    all_ids = {f"v{index:04d}" for index in range(NUM_VIDEOS)}
    seen_over_epochs: set[str] = set()
    orders = []
    for epoch in (0, 1):
        by_rank = epoch_ids(folder, world_size, workers, batch, buffer, epoch)
        flat = [video for ids in by_rank for video in ids]
        assert Counter(flat).most_common(1)[0][1] == 1  # no repeat, within and across ranks
        assert set(flat) <= all_ids
        left_out = NUM_VIDEOS - len(flat)
        assert left_out < world_size * batch <= world_size * max(workers, 1) * batch
        seen_over_epochs |= set(flat)
        orders.append(flat)
    assert orders[0] != orders[1]
    if world_size * batch < NUM_VIDEOS // 2:
        assert len(seen_over_epochs) > len(orders[0])  # the epoch's rotation changes which few are left out
    assert orders[0] == [video for ids in epoch_ids(folder, world_size, workers, batch, buffer, 0) for video in ids]


def test_train_pieces_partition_the_split_for_any_slot_count():
    entries = [ShardEntry(Path(f"s{index}"), count) for index, count in enumerate((0, 7, 1, 0, 12, 3))]
    total = sum(entry.num_samples for entry in entries)
    for world_size, workers, batch in ((1, 1, 1), (1, 3, 2), (2, 2, 2), (3, 4, 1), (4, 8, 1), (2, 1, 11)):
        batches = train_batches_per_rank(entries, world_size, batch)
        for epoch in range(3):
            taken: list[tuple[int, int]] = []
            for rank in range(world_size):
                for worker in range(workers):
                    pieces = train_pieces(entries, Slot(rank, world_size, worker, workers), batch, batches, 0, epoch)
                    assert all(0 < piece.count and piece.first + piece.count <= entries[piece.shard].num_samples
                               for piece in pieces)  # fmt: skip
                    taken += [(piece.shard, piece.first + step) for piece in pieces for step in range(piece.count)]
            assert len(taken) == len(set(taken)) == world_size * batches * batch
            assert total - len(taken) < world_size * batch
        assert all(0 <= train_dropped_per_rank(entries, rank, world_size, batch) <= batch
                   for rank in range(world_size))  # fmt: skip


def test_a_rank_may_leave_out_as_many_as_batch_size_but_all_ranks_fewer_than_world_size_batches():
    entries = [ShardEntry(Path("s0"), 4), ShardEntry(Path("s1"), 3)]  # 7 samples, 2 ranks, batch 2: 1 batch each
    dropped = [train_dropped_per_rank(entries, rank, 2, 2) for rank in range(2)]
    assert dropped == [1, 2]  # runs of 3 and 4 samples, 2 kept of each: "at most batch_size", not "fewer than"
    assert sum(dropped) == 3 < 2 * 2


class CountingStream(io.BytesIO):
    """An in-memory file that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_partial_shard_read_skips_the_other_samples_without_reading_them(shard_folders):
    data = (shard_folders["one shard"] / shard_name("train", 0)).read_bytes()
    everything = list(iterate_samples(io.BytesIO(data), "x"))
    assert len(everything) == NUM_VIDEOS
    stream = CountingStream(data)
    middle = list(iterate_samples(stream, "x", first=10, count=3))
    assert middle == everything[10:13]
    assert stream.bytes_read < len(data) // 4  # headers only for the 10 skipped samples, nothing after the 13th
    assert list(iterate_samples(io.BytesIO(data), "x", first=24)) == everything[24:]
    assert list(iterate_samples(io.BytesIO(data), "x", first=30, count=2)) == []


def test_both_tar_readers_give_the_same_training_epoch(shard_folders):
    def ids(reader: str) -> list[str]:
        loader = build_loader(
            shard_folders["fewer shards than slots"], "train", frames=(1,), batch_size=3, decode="cpu", device="cpu",
            num_workers=0, crop_size=8, multi_scale=False, rank=1, world_size=3, tar_reader=reader,
        )  # fmt: skip
        return [video for batch in loader for video in batch["id"]]

    assert ids("lean") == ids("webdataset") and len(ids("lean")) == 6


@pytest.mark.parametrize(("reader", "workers"), [("lean", 0), ("webdataset", 0), ("lean", 2)])
def test_a_shard_shorter_than_its_manifest_stops_the_training_epoch_naming_it(tmp_path, reader, workers):
    videos = make_videos(9, (3, 4), width=16, height=16)
    write_split(tmp_path, "train", videos, (5, 4))
    short = tmp_path / "short"
    write_split(short, "train", videos[5:7], (2,))  # a shard of 2 samples written where the manifest lists 4
    (short / shard_name("train", 0)).replace(tmp_path / shard_name("train", 1))
    loader = build_loader(
        tmp_path, "train", frames=(1,), batch_size=3, train=True, decode="cpu", device="cpu", num_workers=workers,
        crop_size=8, multi_scale=False, tar_reader=reader,
    )  # fmt: skip
    assert len(loader) == 3  # every sample of the manifest is needed: the short shard is read whatever the order
    with pytest.raises(ShardDataError, match=rf"{shard_name('train', 1)}: holds fewer samples than the 4 its manifest"):
        for _ in loader:
            pass
