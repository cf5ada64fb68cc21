"""How many distinct training videos one epoch yields: the re-read streaming rule against the exact-epoch rule.

A simulation on video ids only (no tar is read, nothing is decoded): the shard sizes are those `make shards` writes
(shard_format.shard_bounds), the shuffle buffer is data_pipeline.stream.ShuffleBuffer, the deal, quotas
and pieces are data_pipeline.stream's own functions.

- re-read rule (``previous`` in the JSON): each worker streams its own shards into the shuffle buffer and, when the stream ends, reads the
  same shards again (new order) without draining the buffer, until its quota of full batches is cut; what the
  buffer still holds at the quota is never yielded, and repeats take its place;
- exact rule (data_pipeline.stream.train_pieces): each worker reads exactly its quota's run of the epoch's
  sequence, and the buffer is drained at the end.

    .venv/bin/python -m benchmarks.bench_epoch_coverage --out runs/bench          # SSv2 scale and the demo
    .venv/bin/python -m benchmarks.bench_epoch_coverage --out runs/bench --quick  # the demo only
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_json_atomic
from data_pipeline.loader import WORKER_STREAM
from data_pipeline.options import DEFAULT_SHUFFLE_BUFFER
from data_pipeline.stream import (
    ShardEntry,
    ShuffleBuffer,
    Slot,
    shard_order,
    train_batches_per_rank,
    train_pieces,
    worker_quota,
)
from shard_format import shard_bounds

RESULT_NAME = "bench_epoch_coverage.json"
SEED = 0


@dataclass(frozen=True)
class Scenario:
    """One training set-up: videos, shards, ranks, loader workers per rank, batch per rank, shuffle buffer."""

    name: str
    videos: int
    shards: int
    world_size: int
    workers: int
    batch_size: int
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER


SSV2 = Scenario("SSv2 train, 8 ranks x 8 workers", 168_913, 256, 8, 8, 8)
DEMO = Scenario("make demo train", 2_400, 16, 1, 1, 32)


def shard_entries(scenario: Scenario) -> list[ShardEntry]:
    """The shards `make shards` writes for the scenario (near-equal sizes), as manifest entries."""
    bounds = shard_bounds(scenario.videos, scenario.shards)
    sizes = [stop - start for start, stop in zip(bounds, bounds[1:])]
    return [ShardEntry(Path(f"shard{index}"), size) for index, size in enumerate(sizes)]


def _first_ids(entries: Sequence[ShardEntry]) -> list[int]:
    """The id of each shard's first video (ids number the videos 0..N-1 in shard order)."""
    return list(np.cumsum([0] + [entry.num_samples for entry in entries])[:-1])


def previous_stream(entries: Sequence[ShardEntry], slot: Slot, epoch: int, rng: np.random.Generator) -> Iterator[int]:
    """The re-read rule's endless stream of one worker: its dealt shards, read again in a new order at the end."""
    first_ids = _first_ids(entries)
    order = shard_order(len(entries), SEED, epoch, shuffle=True)
    if len(entries) >= slot.count:
        shards, stride, offset = [int(index) for index in order[slot.index :: slot.count]], 1, 0
    else:
        shards, stride, offset = [int(index) for index in order], slot.count, slot.index
    while True:
        position = 0
        for shard in shards:
            for local in range(entries[shard].num_samples):
                if (position + local) % stride == offset:
                    yield int(first_ids[shard]) + local
            position += entries[shard].num_samples
        if stride == 1:
            shards = [int(index) for index in rng.permutation(shards)]


def exact_stream(entries: Sequence[ShardEntry], slot: Slot, epoch: int, batch: int, batches: int) -> Iterator[int]:
    """The exact rule's finite stream of one worker: its pieces of the epoch's rotated sequence."""
    first_ids = _first_ids(entries)
    for piece in train_pieces(entries, slot, batch, batches, SEED, epoch):
        start = int(first_ids[piece.shard]) + piece.first
        yield from range(start, start + piece.count)


def worker_epoch(
    stream: Iterator[int], buffer_size: int, rng: np.random.Generator, quota: int, batch: int
) -> list[int]:
    """Pass a stream through the shuffle buffer (drained when the stream ends); keep the quota's full batches."""
    buffer = ShuffleBuffer(buffer_size, rng)
    wanted = quota * batch
    yielded: list[int] = []
    for video in stream:
        chosen = buffer.push(video)
        if chosen is not None:
            yielded.append(chosen)
            if len(yielded) == wanted:
                return yielded
    yielded += list(buffer.drain())
    return yielded[: len(yielded) - len(yielded) % batch][:wanted]


def simulate(scenario: Scenario, rule: str, epoch: int = 0) -> dict[str, Any]:
    """Run one epoch of every worker of every rank under `rule` ("previous" or "exact"); count distinct ids."""
    entries = shard_entries(scenario)
    batches = train_batches_per_rank(entries, scenario.world_size, scenario.batch_size)
    seen: list[int] = []
    per_worker = []
    for rank in range(scenario.world_size):
        for worker in range(scenario.workers):
            slot = Slot(rank, scenario.world_size, worker, scenario.workers)
            rng = np.random.default_rng([SEED, epoch, slot.index, WORKER_STREAM])
            quota = worker_quota(batches, worker, scenario.workers)
            if rule == "previous":
                stream = previous_stream(entries, slot, epoch, rng)
            else:
                stream = exact_stream(entries, slot, epoch, scenario.batch_size, batches)
            ids = worker_epoch(stream, scenario.shuffle_buffer, rng, quota, scenario.batch_size)
            per_worker.append((len(set(ids)), len(ids)))
            seen += ids
    distinct = len(set(seen))
    return {
        "yielded": len(seen),
        "distinct": distinct,
        "distinct_fraction": distinct / scenario.videos,
        "repeats": len(seen) - distinct,
        "left_out": scenario.videos - distinct,
        "worker0_distinct_of_yielded": list(per_worker[0]),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help=f"folder for {RESULT_NAME}")
    parser.add_argument("--quick", action="store_true", help="the demo scenario only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Simulate each scenario under both rules, print the table and write the JSON."""
    args = parse_args(argv)
    scenarios = [DEMO] if args.quick else [SSV2, DEMO]
    results = []
    print(f"{'scenario':<34}{'videos':>8}  {'previous: distinct (w0)':>30}  {'exact: distinct (w0)':>30}  left out")
    for scenario in scenarios:
        previous, exact = simulate(scenario, "previous"), simulate(scenario, "exact")
        results.append({"scenario": asdict(scenario), "previous": previous, "exact": exact})
        cells = [
            f"{rule['distinct']} {100 * rule['distinct_fraction']:.2f}% "
            f"({rule['worker0_distinct_of_yielded'][0]}/{rule['worker0_distinct_of_yielded'][1]})"
            for rule in (previous, exact)
        ]
        print(f"{scenario.name:<34}{scenario.videos:>8}  {cells[0]:>30}  {cells[1]:>30}  {exact['left_out']}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / RESULT_NAME, {"seed": SEED, "results": results})
    print(f"wrote {args.out / RESULT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
