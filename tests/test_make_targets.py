"""Makefile targets run as a user types them: `make gpu-check` in its CPU smoke mode writes the JSON it promises,
`make predict` prints the top classes of a video."""

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


def test_predict_target_prints_the_top_classes_of_a_video(tmp_path: Path) -> None:
    from engine.checkpoint import save_atomic
    from model import build_model
    from preprocess.ffmpeg_tools import resolve_ffmpeg

    video = tmp_path / "clip.webm"
    subprocess.run([resolve_ffmpeg().path, "-v", "error", "-f", "lavfi", "-i", "testsrc=s=48x32:r=10:d=1",
                    "-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", str(video)], check=True)  # fmt: skip
    network = build_model("tiny", num_classes=7, trained_frames=(4, 8))
    save_atomic({"model": network.state_dict(), "config": network.config}, tmp_path / "ffn.pt")
    arguments = "--device cpu --decode cpu --short-side 32 --crop-size 32 --repeats 1 --warmup 0"
    completed = run_make("predict", f"CKPT={tmp_path / 'ffn.pt'}", f"VIDEO={video}", "FRAMES=2 8",
                         f"PREDICT_ARGS={arguments}")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert any(line.startswith("  2 frames: branch 4,") for line in lines)
    assert any(line.startswith("  8 frames: branch 8,") for line in lines)
    assert sum(line.lstrip().startswith("5. ") for line in lines) == 2  # top-5 at each count


def test_predict_target_without_a_checkpoint_says_what_to_set() -> None:
    completed = run_make("predict")
    assert completed.returncode == 2 and "set CKPT=" in completed.stdout
