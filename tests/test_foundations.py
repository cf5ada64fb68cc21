"""Set-up contract: the Makefile's environment handling, the ffmpeg resolver and the device choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.device import get_device
from preprocess import ffmpeg_tools

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_make(*args: str) -> subprocess.CompletedProcess:
    """Run make in the repository root and capture its output."""
    return subprocess.run(["make", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False)


def requirements_stamp_name() -> str:
    """Return the stamp file name the Makefile derives from requirements.txt."""
    checksum = subprocess.run(
        ["cksum"], input=(REPO_ROOT / "requirements.txt").read_bytes(), capture_output=True, check=True
    ).stdout.split()[0].decode()
    return f".installed-{checksum}"


def test_own_environment_installs_nothing():
    dry_run = run_make("-n", "train-ffn", "VENV=", "PYTHON=python", "SHARDS=/data/s")
    assert dry_run.returncode == 0, dry_run.stderr
    assert "pip" not in dry_run.stdout and "venv" not in dry_run.stdout
    assert "python train.py --mode ffn --frames 4 8 16 --shards /data/s" in dry_run.stdout


def test_missing_venv_is_created_and_current_stamp_installs_nothing(tmp_path):
    venv = tmp_path / "env"
    dry_run = run_make("-n", "test", f"VENV={venv}")
    assert f"-m venv {venv}" in dry_run.stdout and "pip install" in dry_run.stdout
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / requirements_stamp_name()).touch()
    os.utime(venv / requirements_stamp_name(), None)
    up_to_date = run_make("-q", "setup", f"VENV={venv}")
    assert up_to_date.returncode == 0, "a current stamp must mean nothing to install"


def test_clean_never_touches_data_or_shards(tmp_path):
    data_root, shards, runs = tmp_path / "db", tmp_path / "shards", tmp_path / "runs"
    for folder in (data_root / "labels", shards, runs / "demo"):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("x")
    result = run_make("clean", "VENV=", f"RUNS={runs}", f"DATA_ROOT={data_root}", f"SHARDS={shards}")
    assert result.returncode == 0, result.stderr
    assert not runs.exists()
    assert (data_root / "labels" / "keep.txt").exists() and (shards / "keep.txt").exists()


def test_ffmpeg_resolution_order_and_version(monkeypatch):
    ffmpeg_tools.resolve_ffmpeg.cache_clear()
    monkeypatch.delenv(ffmpeg_tools.FFMPEG_ENV_VAR, raising=False)
    info = ffmpeg_tools.resolve_ffmpeg()
    assert info.source == "imageio-ffmpeg" and info.version.startswith("ffmpeg version")
    ffmpeg_tools.resolve_ffmpeg.cache_clear()
    monkeypatch.setenv(ffmpeg_tools.FFMPEG_ENV_VAR, info.path)
    assert ffmpeg_tools.resolve_ffmpeg().source == f"${ffmpeg_tools.FFMPEG_ENV_VAR}"
    ffmpeg_tools.resolve_ffmpeg.cache_clear()


def test_broken_ffmpeg_gives_one_line_naming_every_binary(monkeypatch, tmp_path):
    broken = tmp_path / "ffmpeg"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv(ffmpeg_tools.FFMPEG_ENV_VAR, str(broken))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    ffmpeg_tools.resolve_ffmpeg.cache_clear()
    with pytest.raises(ffmpeg_tools.FfmpegNotFoundError) as error:
        ffmpeg_tools.resolve_ffmpeg()
    ffmpeg_tools.resolve_ffmpeg.cache_clear()
    message = str(error.value)
    assert "\n" not in message
    assert str(broken) in message and "imageio-ffmpeg" in message and "PATH" in message and "fix" in message


def test_get_device_order(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")
    assert get_device("cpu") == torch.device("cpu")


def test_get_device_refuses_a_device_it_cannot_use(monkeypatch):
    """An explicit --device that this torch build cannot run on is one line naming it and the fix."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(ValueError, match=f"--device {name}: not available .*omit --device"):
            get_device(name)
    with pytest.raises(ValueError, match="--device gpu0"):
        get_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert get_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        get_device("cuda:1")


def test_model_and_pipeline_import_without_ffmpeg_or_dali():
    code = (
        "import sys\n"
        "for name in ('ffmpeg', 'imageio_ffmpeg', 'nvidia', 'nvidia.dali'):\n"
        "    sys.modules[name] = None\n"
        "import model, data_pipeline\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
