"""A run stopped by a real signal in the middle of an epoch (what a cluster sends before a time limit or a
preemption) writes a mid-epoch checkpoint; resuming it gives bit for bit the run that was never stopped: one
process stopped by SIGTERM, and two gloo ranks of which only one gets SIGUSR1. A mid-epoch checkpoint refuses
another layout in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pipeline_helpers import NUM_CLASSES, make_videos, write_split

import train

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_LINE = "train.py: stopped by {name} at epoch {epoch} step "
RUN_ARGS = [
    "--mode", "ffn", "--frames", "4", "8", "16", "--epochs", "3", "--batch-size", "2", "--num-classes",
    str(NUM_CLASSES), "--arch", "tiny", "--pretrained", "none", "--crop-size", "32", "--test-resize", "32",
    "--no-multi-scale", "--workers", "2", "--threads", "1", "--no-progress", "--device", "cpu", "--dropout", "0.5",
]  # fmt: skip
TIMEOUT_S = 300

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 training videos (6 steps of 2 per epoch on 2 ranks, 12 on 1) and 8 validation videos, 16 frames each."""
    root = tmp_path_factory.mktemp("preemption")
    write_split(root, "train", make_videos(24, (16,)), (9, 7, 8))
    write_split(root, "validation", make_videos(8, (16,), prefix="e"), (4, 4))
    return root


def run_until_line(command: list[str], marker: str, signal_to_send: signal.Signals, target: str = "self") -> str:
    """Start `command`, wait for a line containing `marker`, send the signal, return the whole output.

    `target` "self" signals the started process; "rank1" the training process of rank 1 under torchrun.
    """
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            pid = process.pid if target == "self" else rank_process(process.pid, rank=1)
            os.kill(pid, signal_to_send)
            break
    rest, _ = process.communicate(timeout=TIMEOUT_S)
    output = "".join(lines) + rest
    assert process.returncode == 0, output[-3000:]
    return output


def rank_process(launcher: int, rank: int) -> int:
    """The pid of the training process of `rank` among the children of a torchrun process (Linux /proc)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for children in Path(f"/proc/{launcher}/task").glob("*/children"):
            for child in children.read_text().split():
                environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                if f"RANK={rank}".encode() in environment:
                    return int(child)
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank} under {launcher}")


def assert_same_run(first: Path, second: Path) -> None:
    """Two finished runs' last checkpoints hold bitwise the same weights, optimiser, schedule and history."""
    a, b = (torch.load(folder / "last.pt", weights_only=True) for folder in (first, second))
    assert a["epoch"] == b["epoch"] == 3 and "position" not in a and "position" not in b
    assert [name for name in a["model"] if not torch.equal(a["model"][name], b["model"][name])] == []
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for index, state in a["optimizer"]["state"].items():
        assert all(torch.equal(value, b["optimizer"]["state"][index][key]) for key, value in state.items())
    assert a["scheduler"] == b["scheduler"]
    keys = ("epoch", "lr", "train_loss", "train_top1", "val_top1", "val_top5", "val_n")
    histories = [[{key: record[key] for key in keys} for record in run["metrics"]["history"]] for run in (a, b)]
    assert histories[0] == histories[1]


def mid_epoch_position(output: str, name: str, epoch: int) -> tuple[int, int]:
    """(step, steps) of the stop line a run printed."""
    line = next(line for line in output.splitlines() if STOP_LINE.format(name=name, epoch=epoch) in line)
    step, steps = line.split(" step ")[1].split(":")[0].split("/")
    return int(step), int(steps)


@pytest.mark.parametrize(("extra", "expected_steps"), [([], 12), (["--total-batch", "4"], 6)],
                         ids=["one-batch-per-step", "two-micro-batches-per-step"])
def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(shards, tmp_path, extra, expected_steps):
    common = [*RUN_ARGS, "--shards", str(shards), *extra]
    assert train.main([*common, "--output", str(tmp_path / "whole")]) == 0
    parts = tmp_path / "parts"
    command = [sys.executable, "train.py", *common, "--output", str(parts)]
    assert train.main([*common, "--output", str(parts), "--stop-after-epochs", "1"]) == 0
    output = run_until_line([*command, "--resume"], "resumed from", signal.SIGTERM)
    step, steps = mid_epoch_position(output, "SIGTERM", epoch=2)
    assert 0 < step < steps == expected_steps, output
    checkpoint = torch.load(parts / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["position"]["step"] == step
    assert len(checkpoint["position"]["sums"]) == 1 and checkpoint["position"]["record"]["epoch"] == 2
    assert len(checkpoint["metrics"]["history"]) == 1 and "done:" not in output
    assert train.main([*common, "--output", str(parts), "--resume"]) == 0
    assert_same_run(tmp_path / "whole", parts)


def torchrun(*arguments: str) -> list[str]:
    """Two training processes on this machine (gloo)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
            *arguments]


def test_sigusr1_on_one_of_two_ranks_then_resume_equals_an_uninterrupted_run(shards, tmp_path):
    common = [*RUN_ARGS, "--shards", str(shards)]
    whole = subprocess.run(torchrun(*common, "--output", str(tmp_path / "whole")), cwd=REPO_ROOT,
                           env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                           timeout=TIMEOUT_S)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-2000:]
    parts = tmp_path / "parts"
    output = run_until_line(torchrun(*common, "--output", str(parts)), "steps/epoch=", signal.SIGUSR1, "rank1")
    step, steps = mid_epoch_position(output, "SIGUSR1", epoch=1)
    assert 0 < step < steps == 6, output
    checkpoint = torch.load(parts / "last.pt", weights_only=True)
    assert checkpoint["position"]["layout"]["processes"] == 2 and len(checkpoint["position"]["sums"]) == 2
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "last.pt").write_bytes((parts / "last.pt").read_bytes())
    resumed = subprocess.run(torchrun(*common, "--output", str(parts), "--resume"), cwd=REPO_ROOT,
                             env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"at epoch 1 step {step}/6" in resumed.stdout
    assert_same_run(tmp_path / "whole", parts)

    with pytest.raises(SystemExit, match=r"mid-epoch checkpoint written with 2 process\(es\) x --batch-size 2"):
        train.main([*common, "--output", str(tmp_path / "copy"), "--resume"])
    # At an epoch's end another total batch is refused too (the rate and the schedule would change).
    with pytest.raises(SystemExit, match=r"total batch 4 \(2 process\(es\) x --batch-size 2, 6 steps per epoch\)"):
        train.main([*common, "--output", str(parts), "--resume"])
    with pytest.raises(SystemExit, match="total batch 4"):
        train.main([*common, "--output", str(parts), "--resume", "--batch-size", "4", "--max-steps-per-epoch", "5"])
    assert train.main([*common, "--output", str(parts), "--resume", "--batch-size", "4"]) == 0  # 1 x 4: the same
