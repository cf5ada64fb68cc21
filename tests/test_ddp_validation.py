"""Validation under DDP uses the BatchNorm statistics the checkpoint holds: two gloo ranks run train.main; after each
epoch's last step their running statistics differ, every rank then validates with rank 0's, the checkpoint holds
those, and the logged validation equals evaluate.py's re-evaluation of the checkpoint."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from pipeline_helpers import NUM_CLASSES, make_videos, write_split

import evaluate
import train

WORLD_SIZE = 2
RUN_ARGS = [
    "--mode", "ffn", "--frames", "4", "8", "16", "--epochs", "2", "--batch-size", "2", "--num-classes",
    str(NUM_CLASSES), "--arch", "tiny", "--pretrained", "none", "--crop-size", "32", "--test-resize", "32",
    "--no-multi-scale", "--workers", "0", "--threads", "1", "--no-progress", "--device", "cpu",
]  # fmt: skip

pytestmark = pytest.mark.slow


def buffers_of(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every named buffer (BatchNorm running statistics and counters)."""
    return {name: buffer.detach().clone() for name, buffer in network.named_buffers()}


def run_rank(rank: int, port: int, shards: str, out_dir: str) -> None:
    """One rank of train.main, recording its buffers after each epoch's steps and when it validates."""
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP thread pool (it would hang)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    after_steps, at_validation = [], []
    train_one_epoch, validate = train.train_one_epoch, train.validate

    def recording_train_one_epoch(model, *args, **options):
        result = train_one_epoch(model, *args, **options)
        after_steps.append(buffers_of(model))
        return result

    def recording_validate(network, *args, **options):
        at_validation.append(buffers_of(network))
        return validate(network, *args, **options)

    train.train_one_epoch, train.validate = recording_train_one_epoch, recording_validate
    status = train.main([*RUN_ARGS, "--shards", shards, "--output", f"{out_dir}/run"])
    torch.save({"status": status, "after_steps": after_steps, "at_validation": at_validation},
               Path(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path, Path]:
    """Run the two ranks once; return their records, the shards and the run folder."""
    root = tmp_path_factory.mktemp("ddp_validation")
    shards = root / "shards"
    write_split(shards, "train", make_videos(16, (16,)), (6, 5, 5))
    write_split(shards, "validation", make_videos(24, (16,), prefix="e", seed=1), (8, 8, 8))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(run_rank, args=(port, str(shards), str(root)), nprocs=WORLD_SIZE, join=True,
                       start_method="fork")
    records = [torch.load(root / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    return records, shards, root / "run"


def test_the_ranks_statistics_differ_after_an_epochs_steps(ranks):
    records, _, _ = ranks
    assert [record["status"] for record in records] == [0, 0]
    first, second = records[0]["after_steps"][-1], records[1]["after_steps"][-1]
    differing = [name for name in first if not torch.equal(first[name], second[name])]
    print(f"\nafter the last step: {len(differing)} of {len(first)} buffers differ between the 2 ranks")
    assert any(name.endswith("running_mean") for name in differing)


def test_every_rank_validates_with_the_statistics_the_checkpoint_holds(ranks):
    records, _, run = ranks
    assert len(records[0]["at_validation"]) == len(records[1]["at_validation"]) == 2
    for first, second in zip(records[0]["at_validation"], records[1]["at_validation"]):
        assert [name for name in first if not torch.equal(first[name], second[name])] == []
    saved = torch.load(run / "last.pt", weights_only=True)["model"]
    final = records[1]["at_validation"][-1]
    assert [name for name in final if not torch.equal(final[name], saved[name])] == []


def test_logged_validation_equals_a_re_evaluation_of_the_checkpoint(ranks, tmp_path):
    _, shards, run = ranks
    logged = torch.load(run / "last.pt", weights_only=True)["metrics"]["history"][-1]
    report = evaluate.run(evaluate.build_parser().parse_args(
        ["--checkpoints", f"run={run / 'last.pt'}", "--frames", "16", "--shards", str(shards), "--output",
         str(tmp_path), "--workers", "0", "--batch-size", "5", "--no-latency", "--device", "cpu"]))
    entry = report["models"]["run"]
    assert entry["n"] == logged["val_n"] == 24
    assert entry["top1"]["16"] == pytest.approx(logged["val_top1"], abs=1e-3)  # evaluate.py rounds to 4 decimals
    assert entry["top5"]["16"] == pytest.approx(logged["val_top5"], abs=1e-3)  # evaluate.py rounds to 4 decimals
