"""benchmarks.run_all: discovers runnable benchmarks, runs each in its own process, reports failures, collects JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run_all

FAKE_MODULES = {
    "bench_ok.py": (
        "import argparse, json, pathlib\n"
        "if __name__ == \"__main__\":\n"
        "    parser = argparse.ArgumentParser()\n"
        "    parser.add_argument('--out', type=pathlib.Path)\n"
        "    parser.add_argument('--quick', action='store_true')\n"
        "    args = parser.parse_args()\n"
        "    print('table of bench_ok')\n"
        "    (args.out / 'bench_ok.json').write_text(json.dumps({'quick': args.quick, 'frames_per_s': 12.5}))\n"
    ),
    "bench_broken.py": (
        "import sys\nif __name__ == \"__main__\":\n    print('broken on purpose', file=sys.stderr)\n    sys.exit(3)\n"
    ),
    "bench_slow.py": "import time\nif __name__ == \"__main__\":\n    time.sleep(60)\n",
    "helpers.py": "VALUE = 1\n",
    "run_all.py": "if __name__ == \"__main__\":\n    raise SystemExit(9)\n",
}


@pytest.fixture()
def fake_benchmarks(tmp_path: Path) -> Path:
    """A package folder of fake benchmarks: one good, one failing, one hanging, a helper and a runner copy."""
    folder = tmp_path / "fakebench"
    folder.mkdir()
    for name, source in FAKE_MODULES.items():
        (folder / name).write_text(source, encoding="utf-8")
    return folder


def test_discover_keeps_runnable_modules_only(fake_benchmarks: Path) -> None:
    assert run_all.discover(fake_benchmarks) == ["bench_broken", "bench_ok", "bench_slow"]
    real = run_all.discover()
    assert "gpu_check" in real and "bench_model" in real
    assert "run_all" not in real and "gpu_check_data" not in real


def test_failures_and_timeouts_are_reported_and_json_collected(fake_benchmarks: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    status = run_all.main(["--out", str(out), "--quick", "--bench-dir", str(fake_benchmarks), "--timeout-s", "5"])
    assert status == 1
    summary = json.loads((out / run_all.SUMMARY_NAME).read_text(encoding="utf-8"))
    records = summary["benchmarks"]
    assert summary["quick"] is True and list(records) == ["bench_broken", "bench_ok", "bench_slow"]
    assert records["bench_ok"]["status"] == "ok"
    assert records["bench_ok"]["figures"] == {"bench_ok.json": {"quick": True, "frames_per_s": 12.5}}
    assert records["bench_broken"]["status"] == "failed" and records["bench_broken"]["returncode"] == 3
    assert "broken on purpose" in records["bench_broken"]["output_tail"][-1]
    assert records["bench_slow"]["status"] == "timeout" and records["bench_slow"]["json_files"] == []
    assert "table of bench_ok" in (out / "bench_ok.log").read_text(encoding="utf-8")


def test_only_and_skip_select_benchmarks(fake_benchmarks: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_all.main(["--out", str(out), "--bench-dir", str(fake_benchmarks), "--only", "bench_ok"]) == 0
    assert list(json.loads((out / run_all.SUMMARY_NAME).read_text(encoding="utf-8"))["benchmarks"]) == ["bench_ok"]
    skipping = ["--skip", "bench_broken", "bench_slow"]
    assert run_all.main(["--out", str(out), "--bench-dir", str(fake_benchmarks), *skipping]) == 0
    summary = json.loads((out / run_all.SUMMARY_NAME).read_text(encoding="utf-8"))
    assert list(summary["benchmarks"]) == ["bench_ok"] and summary["quick"] is False
    with pytest.raises(SystemExit, match="no benchmark named nope"):
        run_all.main(["--out", str(out), "--bench-dir", str(fake_benchmarks), "--only", "nope"])
