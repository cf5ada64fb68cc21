"""`make bench`: run every benchmark under benchmarks/ and collect their JSON in one summary.

    .venv/bin/python -m benchmarks.run_all --out runs/bench            # every benchmark, full size
    .venv/bin/python -m benchmarks.run_all --out runs/bench --quick    # every benchmark's smoke mode

A benchmark is a module of the ``benchmarks`` folder that can run as a script (it has an
``if __name__ == "__main__":`` guard) and takes ``--out DIR`` (and ``--quick``); helper modules have no such guard
and this runner skips itself. Each runs in its own process (``python -m benchmarks.<name> --out DIR [--quick]``)
from the repository root, so one that fails, hangs past ``--timeout-s`` or crashes is reported and the others
still run. Its output goes to ``DIR/<name>.log`` and is echoed; the JSON files it writes into DIR are read back and
collected, with every module's status, return code and seconds, into ``DIR/run_all.json``. The exit status is 0
when every benchmark succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.atomic import write_json_atomic

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SUMMARY_NAME = "run_all.json"
MAIN_GUARD = '__name__ == "__main__"'
SELF_NAME = "run_all"
DEFAULT_TIMEOUT_S = 3600.0
QUICK_TIMEOUT_S = 600.0
TAIL_LINES = 20


def discover(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Names of the runnable benchmark modules in `bench_dir` (a ``__main__`` guard), sorted, this runner excluded."""
    names = []
    for path in sorted(Path(bench_dir).glob("*.py")):
        if path.stem in (SELF_NAME, "__init__") or path.stem.startswith("_"):
            continue
        if MAIN_GUARD in path.read_text(encoding="utf-8"):
            names.append(path.stem)
    return names


def json_snapshot(folder: Path) -> dict[str, float]:
    """Modification times of the JSON files in `folder` (the runner's own summary excluded)."""
    if not folder.is_dir():
        return {}
    return {path.name: path.stat().st_mtime for path in folder.glob("*.json") if path.name != SUMMARY_NAME}


def read_json(path: Path) -> Any:
    """A JSON file's content, or {"unreadable": reason}."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        return {"unreadable": f"{type(error).__name__}: {error}"}


def run_one(name: str, package: str, out: Path, quick: bool, timeout_s: float, root: Path) -> dict[str, Any]:
    """Run one benchmark in its own process; return its status, seconds and the JSON it wrote."""
    command = [sys.executable, "-m", f"{package}.{name}", "--out", str(out)] + (["--quick"] if quick else [])
    before = json_snapshot(out)
    started = time.perf_counter()
    print(f"run_all: {' '.join(command[1:])}", flush=True)
    try:
        completed = subprocess.run(
            command, cwd=root, capture_output=True, text=True, timeout=timeout_s,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip
        returncode, output = completed.returncode, completed.stdout + completed.stderr
        status = "ok" if returncode == 0 else "failed"
    except subprocess.TimeoutExpired as error:
        returncode, status = None, "timeout"
        parts = (error.stdout, error.stderr)
        output = "".join(part.decode() if isinstance(part, bytes) else part or "" for part in parts)
    seconds = time.perf_counter() - started
    (out / f"{name}.log").write_text(output, encoding="utf-8")
    print(output, end="" if output.endswith("\n") or not output else "\n", flush=True)
    after = json_snapshot(out)
    written = sorted(file for file, mtime in after.items() if before.get(file) != mtime)
    record: dict[str, Any] = {"status": status, "returncode": returncode, "seconds": seconds, "json_files": written,
                              "figures": {file: read_json(out / file) for file in written}}  # fmt: skip
    if status != "ok":
        record["output_tail"] = output.strip().splitlines()[-TAIL_LINES:]
    return record


def print_summary(results: dict[str, dict[str, Any]]) -> None:
    """One line per benchmark: status, seconds, JSON written."""
    print(f"{'benchmark':<24}{'status':<10}{'seconds':>9}  json")
    for name, record in results.items():
        files = ", ".join(record["json_files"]) or "-"
        print(f"{name:<24}{record['status']:<10}{record['seconds']:>9.1f}  {files}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help=f"folder for every benchmark's JSON and {SUMMARY_NAME}")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (smoke runs)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these benchmarks (module names)")
    parser.add_argument("--skip", nargs="+", default=[], help="benchmarks not to run")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help=f"per benchmark (default {DEFAULT_TIMEOUT_S:.0f}, quick {QUICK_TIMEOUT_S:.0f})")
    parser.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help="folder of the benchmark modules")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; write the summary; return 0 when all succeeded."""
    args = parse_args(argv)
    bench_dir = args.bench_dir.resolve()
    names = discover(bench_dir)
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        raise SystemExit(f"run_all: no benchmark named {', '.join(unknown)} in {bench_dir}; choose from {names}")
    selected = [name for name in names if (args.only is None or name in args.only) and name not in args.skip]
    timeout_s = args.timeout_s or (QUICK_TIMEOUT_S if args.quick else DEFAULT_TIMEOUT_S)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in selected:
        results[name] = run_one(name, bench_dir.name, out, args.quick, timeout_s, bench_dir.parent)
        write_json_atomic(out / SUMMARY_NAME, {"quick": args.quick, "benchmarks": results})
    write_json_atomic(out / SUMMARY_NAME, {"quick": args.quick, "benchmarks": results})
    print_summary(results)
    print(f"run_all: wrote {out / SUMMARY_NAME}")
    return 0 if all(record["status"] == "ok" for record in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
