"""Makefile targets run as a user types them: `make gpu-check` in its CPU smoke mode writes the JSON it promises."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
SMOKE_ARGS = "--smoke --device cpu --workers 1 --cpu-workers 1 --sections shards"
MAKE_TIMEOUT_S = 600

pytestmark = pytest.mark.skipif(MAKE is None, reason="GNU make is not installed")


def run_make(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run make in the repository root with this interpreter and no venv; return the finished process."""
    command = [str(MAKE), "--no-print-directory", *arguments, "VENV=", f"PYTHON={sys.executable}"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=MAKE_TIMEOUT_S)


def test_gpu_check_target_writes_the_report_under_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    completed = run_make("gpu-check", f"RUNS={runs}", f"GPU_ARGS={SMOKE_ARGS}")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads((runs / "gpu" / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["sections"]["shards"]["status"] == "ok"
    assert report["environment"]["torch"]
    assert (runs / "gpu" / "gpu_check.md").is_file()


def test_gpu_check_target_runs_the_full_check_by_default() -> None:
    completed = run_make("-n", "gpu-check", "RUNS=runs")
    assert completed.returncode == 0, completed.stderr
    commands = [line.split() for line in completed.stdout.splitlines() if "benchmarks.gpu_check" in line]
    assert commands == [[sys.executable, "-m", "benchmarks.gpu_check", "--out", "runs/gpu/gpu_check.json"]]
