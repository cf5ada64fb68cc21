"""Two nodes without SLURM: two torchrun processes meeting at a c10d rendezvous on 127.0.0.1, one training process
each, train exactly as one torchrun with two processes (the same checkpoint, bit for bit)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pipeline_helpers import NUM_CLASSES, make_videos, write_split

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = [
    "--mode", "ffn", "--frames", "4", "8", "16", "--epochs", "2", "--batch-size", "2", "--num-classes",
    str(NUM_CLASSES), "--arch", "tiny", "--pretrained", "none", "--crop-size", "32", "--test-resize", "32",
    "--no-multi-scale", "--workers", "1", "--threads", "1", "--no-progress", "--device", "cpu",
]  # fmt: skip
TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(nodes: int, processes_per_node: int, port: int, run_id: str) -> list[str]:
    """The torchrun command of one node (c10d rendezvous on 127.0.0.1)."""
    return [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={processes_per_node}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={run_id}", "train.py",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 8 validation videos of 16 frames at 32 px."""
    root = tmp_path_factory.mktemp("multinode")
    write_split(root, "train", make_videos(16, (16,)), (6, 5, 5))
    write_split(root, "validation", make_videos(8, (16,), prefix="e"), (4, 4))
    return root


def launch(commands: list[list[str]]) -> None:
    """Start every command at once (one per node) and check that all of them succeed."""
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for command in commands]
    outputs = [process.communicate(timeout=TIMEOUT_S)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]


def test_two_nodes_of_one_process_equal_one_node_of_two(shards, tmp_path):
    single, double = tmp_path / "one_node", tmp_path / "two_nodes"
    launch([[*torchrun(1, 2, free_port(), "one"), *TRAIN_ARGS, "--shards", str(shards), "--output", str(single)]])
    port = free_port()
    launch([[*torchrun(2, 1, port, "two"), *TRAIN_ARGS, "--shards", str(shards), "--output", str(double)]
            for _ in range(2)])
    one = torch.load(single / "last.pt", weights_only=True)
    two = torch.load(double / "last.pt", weights_only=True)
    assert one["metrics"]["settings"]["world_size"] == two["metrics"]["settings"]["world_size"] == 2
    differing = [name for name in one["model"] if not torch.equal(one["model"][name], two["model"][name])]
    assert not differing, differing[:5]
    assert one["optimizer"]["param_groups"] == two["optimizer"]["param_groups"]
    for index, state in one["optimizer"]["state"].items():
        assert all(torch.equal(value, two["optimizer"]["state"][index][key]) for key, value in state.items())
    records = [[(record["train_loss"], record["val_top1"]) for record in run["metrics"]["history"]]
               for run in (one, two)]
    assert records[0] == records[1] and len(records[0]) == 2
