"""The report harness of ``benchmarks.gpu_check``: the time budget, the targets, the environment record, and the
JSON and Markdown outputs, rewritten after every section so that a run cut short still reports what it did.

The sections themselves (what is measured) live in ``benchmarks.gpu_check``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_check_data import dali_version
from common.atomic import atomic_file, write_json_atomic
from common.device import get_device

JSON_NAME = "gpu_check.json"
DEFAULT_BUDGET_S = 220.0
REFERENCE_BUDGET_S = 220.0  # the budget the full sizes are made for; a smaller one scales the throughput videos
WARMUP_STEPS = 3
MIN_TIMED_STEPS = 2
MIN_SECTION_S = 4.0
ERROR_LINES = 12
FFMPEG_MODULES = ("ffmpeg", "imageio_ffmpeg")
V100_32GB_MIB = 32510  # what nvidia-smi reports for a 32 GB V100 (the official run: 16 videos per such GPU)
# Each section's share of the time left when it starts (shares of the sections still to run, renormalised).
SECTION_WEIGHTS = {
    "shards": 0.07,
    "parity": 0.05,
    "decode": 0.12,
    "loader_training": 0.26,
    "model_speed": 0.17,
    "memory": 0.05,
    "short_training": 0.28,
    "cost": 0.02,
}


class SectionSkipped(RuntimeError):
    """Raised by a section that cannot run here; the message is the reason recorded in the JSON."""


# A section: (context, seconds allotted) -> its figures. The context is the caller's (gpu_check.Context).
SectionFunction = Callable[[Any, float], dict[str, Any]]


def failure_record(error: Exception) -> dict[str, Any]:
    """The record of a failed measurement (the error and its traceback's last lines, also printed to stderr)."""
    lines = traceback.format_exc().strip().splitlines()
    print("\n".join(lines[-ERROR_LINES:]), file=sys.stderr, flush=True)
    return {"status": "failed", "reason": f"{type(error).__name__}: {error}", "traceback": lines[-ERROR_LINES:]}


def guarded(function: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; an exception becomes {"status": "failed", "reason": ...} so its neighbours still run."""
    try:
        return function()
    except Exception as error:  # noqa: BLE001 - one backend failing must not lose the others' figures
        return failure_record(error)


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def lookup(tree: dict[str, Any], path: str) -> Any:
    """Return tree[a][b][c] for path "a.b.c", or None when any key is missing."""
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def nvidia_smi() -> dict[str, str] | None:
    """GPU name, driver version and memory from nvidia-smi, or None when it is absent or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    query = "name,driver_version,memory.total,pci.bus_id"
    try:
        completed = subprocess.run(
            [binary, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        return None
    return dict(zip(query.split(","), (part.strip() for part in lines[0].split(","))))


def proc_driver_version() -> str | None:
    """The NVIDIA kernel driver line of /proc/driver/nvidia/version, or None."""
    path = Path("/proc/driver/nvidia/version")
    try:
        return path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def cuda_properties(device: torch.device) -> dict[str, Any]:
    """Name, memory, SM count and capability of a CUDA device."""
    properties = torch.cuda.get_device_properties(device)
    return {
        "name": properties.name,
        "total_memory_mib": properties.total_memory // 2**20,
        "multiprocessors": properties.multi_processor_count,
        "capability": f"{properties.major}.{properties.minor}",
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def environment(device: torch.device, smoke: bool, budget_s: float) -> dict[str, Any]:
    """Section 0: what ran where."""
    smi = nvidia_smi()
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "smoke" if smoke else "full",
        "budget_s": budget_s,
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "dali": dali_version(),
        "webdataset": package_version("webdataset"),
        "numpy": np.__version__,
        "pillow": package_version("pillow") or package_version("Pillow"),
        "nvidia_smi": smi,
        "driver": (smi or {}).get("driver_version") or proc_driver_version(),
    }
    if device.type == "cuda":
        info["gpu"] = cuda_properties(device)
        info["device_name"] = info["gpu"]["name"]
    else:
        info["device_name"] = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    return info


# Sizes, the sections' shared context, timing


@dataclass(frozen=True)
class Sizes:
    """Everything whose size differs between the full GPU run and the CPU smoke run."""

    arch: str = "resnet50"
    bench_arch: str = "resnet50"
    bench_size: int = 224
    bench_frames_per_step: int = 224
    crop: int = 224
    batch: int = 8
    memory_batches: tuple[int, ...] = (8, 16)
    frame_width: int = 427
    frame_height: int = 240
    num_videos: int = 2048
    min_frames: int = 30
    max_frames: int = 60
    pool_clips: int = 16
    num_shards: int = 32
    parity_videos: int = 8
    decode_videos: int = 256
    decode_batches: tuple[int, ...] = (8, 32)
    temporal_videos_per_class: int = 250
    temporal_size: int = 32
    train_batch: int = 32
    train_epochs: int = 20
    eval_batch: int = 64
    workers: int = 6
    cpu_workers: int = 16


SMOKE_SIZES = Sizes(
    arch="tiny", bench_arch="resnet18", bench_size=32, bench_frames_per_step=112, crop=32, batch=2,
    memory_batches=(), frame_width=64, frame_height=48, num_videos=12, min_frames=16, max_frames=24, pool_clips=2,
    num_shards=2, parity_videos=2, decode_videos=4, decode_batches=(2,), temporal_videos_per_class=3,
    train_batch=8, train_epochs=1, eval_batch=8, workers=1, cpu_workers=1,
)  # fmt: skip


def resolve_sizes(smoke: bool, budget_s: float, workers: int | None, cpu_workers: int | None) -> Sizes:
    """Pick the sizes: smoke sizes, or the full sizes with the throughput videos scaled to the budget."""
    if smoke:
        sizes = SMOKE_SIZES
    else:
        cores = os.cpu_count() or 1
        scale = min(1.0, max(0.25, budget_s / REFERENCE_BUDGET_S))
        sizes = replace(
            Sizes(), num_videos=int(Sizes.num_videos * scale), workers=max(1, min(Sizes.workers, cores - 1)),
            cpu_workers=max(1, cores),
        )  # fmt: skip
    if workers:
        sizes = replace(sizes, workers=workers)
    if cpu_workers:
        sizes = replace(sizes, cpu_workers=cpu_workers)
    return sizes


@dataclass
class Context:
    """What the sections share: options, device, sizes, scratch folder and the shards made."""

    device: torch.device
    sizes: Sizes
    work: Path
    smoke: bool
    seed: int = 0
    shards: dict[str, Path] = field(default_factory=dict)
    temporal_classes: int = 0

    @property
    def warmup_steps(self) -> int:
        """Untimed steps before a timed loop (one in smoke runs)."""
        return 1 if self.smoke else WARMUP_STEPS

    @property
    def min_steps(self) -> int:
        """Fewest timed steps of a loop (one in smoke runs)."""
        return 1 if self.smoke else MIN_TIMED_STEPS

    @property
    def on_cuda(self) -> bool:
        """True on a CUDA device."""
        return self.device.type == "cuda"

    @property
    def precision(self) -> str:
        """The training precision: bf16 autocast on CUDA, fp32 elsewhere (engine.precision's "auto")."""
        return "bf16" if self.on_cuda else "fp32"

    def need_shards(self, kind: str) -> Path:
        """Return the folder of shards `kind`, or skip the section when they were not made."""
        if kind not in self.shards:
            raise SectionSkipped(f"the {kind} shards were not made (see section shards)")
        return self.shards[kind]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_for(step: Callable[[], Any], seconds: float, min_steps: int, device: torch.device) -> tuple[int, float]:
    """Run `step` until `seconds` have passed (at least `min_steps` times); return (steps, elapsed seconds)."""
    synchronize(device)
    started = time.perf_counter()
    steps = 0
    while steps < min_steps or time.perf_counter() - started < seconds:
        step()
        steps += 1
    synchronize(device)
    return steps, time.perf_counter() - started


# Budget, targets, report


@dataclass
class Budget:
    """Wall-clock budget shared by the sections: each gets its weight's share of what is left."""

    total_s: float
    started: float = field(default_factory=time.perf_counter)

    def remaining(self) -> float:
        """Seconds left."""
        return self.total_s - (time.perf_counter() - self.started)

    def allot(self, name: str, pending: Sequence[str]) -> float:
        """Seconds for section `name` given the sections still to run (itself included)."""
        weights = sum(SECTION_WEIGHTS.get(section, 0.0) for section in pending)
        share = SECTION_WEIGHTS.get(name, 0.0) / weights if weights > 0 else 1.0
        return max(0.0, self.remaining() * share)


@dataclass(frozen=True)
class Target:
    """One figure with a target: where it sits in the results, the comparison and the threshold."""

    name: str
    description: str
    path: str
    comparison: str
    threshold: float


TARGETS = (
    Target("dali_data_stall", "data stall with the dali loader (1 - real / in-device frames/s)",
           "sections.loader_training.backends.dali.data_stall", "<=", 0.05),
    Target("dali_decode_frames_per_s", "dali decode + augment, decoded frames/s at the training batch",
           "sections.decode.dali.runs.8.decoded_frames_per_s", ">=", 20000.0),
    Target("tsm_over_plain", "TSM / plain ResNet-50 training frames/s (bf16, channels_last)",
           "sections.model_speed.ratio_to_plain.tsm", ">=", 0.85),
    Target("ffn_over_plain", "TSM-FFN / plain ResNet-50 training frames/s (bf16, channels_last)",
           "sections.model_speed.ratio_to_plain.ffn", ">=", 0.75),
    Target("ffn_16_videos_mib", "TSM-FFN training at 16 videos/GPU: context + peak reserved MiB (32 GB V100)",
           "sections.memory.batches.16.footprint_mib", "<=", float(V100_32GB_MIB)),
    Target("model_cuda_vs_cpu_rel_l2", "TSM-FFN CUDA fp32 (TF32 off) logits vs CPU, relative L2",
           "sections.parity.model.relative_l2", "<", 1e-4),
    Target("short_training_over_chance", "short training: held-out top-1, mean of 4/8/16F, over chance",
           "sections.short_training.mean_accuracy_over_chance", ">=", 3.0),
)  # fmt: skip


def compare(value: float, comparison: str, threshold: float) -> bool:
    """Apply a target's comparison."""
    return {"<=": value <= threshold, "<": value < threshold, ">=": value >= threshold}[comparison]


def evaluate_targets(results: dict[str, Any], judged: bool) -> list[dict[str, Any]]:
    """Every target with its value and pass (None when the figure is missing or the run is not judged)."""
    verdicts = []
    for target in TARGETS:
        value = lookup(results, target.path)
        passed = None
        if judged and isinstance(value, (int, float)) and not isinstance(value, bool):
            passed = compare(float(value), target.comparison, target.threshold)
        verdicts.append({**asdict(target), "value": value, "pass": passed})
    return verdicts


def format_value(value: Any) -> str:
    """A short human form of a figure."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def markdown_table(results: dict[str, Any]) -> str:
    """The README Results table: one row per target, then the status of every section."""
    environment_info = results.get("environment", {})
    lines = [
        f"gpu_check on {environment_info.get('device_name', '?')}, driver {environment_info.get('driver', '?')}, "
        f"torch {environment_info.get('torch', '?')}, DALI {environment_info.get('dali', '-')}, "
        f"{environment_info.get('date', '?')} ({environment_info.get('mode', '?')} run)",
        "",
        "| target | value | threshold | pass |",
        "|---|---|---|---|",
    ]
    for verdict in results.get("targets", []):
        passed = {True: "pass", False: "FAIL", None: "not judged"}[verdict["pass"]]
        lines.append(
            f"| {verdict['description']} | {format_value(verdict['value'])} | {verdict['comparison']} "
            f"{format_value(verdict['threshold'])} | {passed} |"
        )
    lines += ["", "| section | status | seconds |", "|---|---|---|"]
    for name, section in results.get("sections", {}).items():
        status = section.get("status", "?")
        if section.get("reason"):
            status += f": {section['reason']}"
        lines.append(f"| {name} | {status} | {format_value(section.get('seconds'))} |")
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    """The results dict and where it is written (JSON plus a Markdown table beside it)."""

    path: Path
    results: dict[str, Any] = field(default_factory=lambda: {"sections": {}})

    def save(self, judged: bool) -> None:
        """Recompute the targets and rewrite the JSON and the Markdown table atomically."""
        self.results["targets"] = evaluate_targets(self.results, judged)
        self.results["loaded_ffmpeg_modules"] = sorted(name for name in sys.modules if name in FFMPEG_MODULES)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.results)
        with atomic_file(self.path.with_suffix(".md"), "w") as handle:
            handle.write(markdown_table(self.results))


def run_section(name: str, function: SectionFunction, context: Any, allotted: float) -> dict[str, Any]:
    """Run one section; an exception becomes status "failed" with the error's last lines (the run goes on)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    print(f"gpu_check: section {name} (about {allotted:.0f} s)", flush=True)
    try:
        record = {"status": "ok", **function(context, allotted)}
    except SectionSkipped as reason:
        record = {"status": "skipped", "reason": str(reason)}
    except Exception as error:  # noqa: BLE001 - one broken section must not cost the others their figures
        record = failure_record(error)
    record.update(
        seconds=time.perf_counter() - started, main_process_cpu_s=time.process_time() - cpu_started, allotted_s=allotted
    )
    return record


def run_sections(report: Report, sections: Sequence[tuple[str, SectionFunction]], context: Any, budget: Budget,
                 selected: Sequence[str], judged: bool) -> None:
    """Run the selected sections in order, each within its share of the budget; save after each one.

    In a smoke run (``context.smoke``) every section runs at once with no time allotted (toy sizes).
    """
    chosen = [(name, function) for name, function in sections if name in selected]
    for index, (name, function) in enumerate(chosen):
        pending = [pending_name for pending_name, _ in chosen[index:]]
        allotted = budget.allot(name, pending)
        if budget.remaining() <= 0 or (not context.smoke and allotted < MIN_SECTION_S):
            record = {"status": "skipped", "reason": f"budget: {max(0.0, budget.remaining()):.0f} s left"}
        else:
            record = run_section(name, function, context, 0.0 if context.smoke else allotted)
        report.results["sections"][name] = record
        report.save(judged)


def resolve_out(out: Path) -> Path:
    """`out` itself when it ends in .json, else ``out/gpu_check.json``."""
    return out if out.suffix == ".json" else out / JSON_NAME


@contextlib.contextmanager
def scratch_folder(work_dir: Path | None, keep: bool) -> Iterator[Path]:
    """The scratch folder: `work_dir` (created) or a new temporary one, removed afterwards unless kept."""
    folder = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def print_summary(report: Report) -> None:
    """Print the Markdown table and where the JSON is."""
    print(markdown_table(report.results), flush=True)
    print(f"gpu_check: wrote {report.path} and {report.path.with_suffix('.md')}", flush=True)


# Command line and the whole run


def parse_args(sections: Sequence[tuple[str, SectionFunction]], argv: Sequence[str] | None,
               description: str | None) -> argparse.Namespace:
    """Command-line options of the check (the section names come from `sections`)."""
    names = [name for name, _ in sections]
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help=f"JSON file, or a folder for {JSON_NAME}")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="wall-clock budget of all sections (sizes and steps scale to it; the rest is skipped)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: model.get_device())")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (automatic without CUDA)")
    parser.add_argument("--quick", action="store_true", help="same as --smoke (the benchmarks' common flag)")
    parser.add_argument("--sections", nargs="+", default=names, choices=names, help="run only these (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers for the GPU backends")
    parser.add_argument("--cpu-workers", type=int, default=None, help="loader workers for the cpu backend")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder for shards (default: a temp one)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run_check(sections: Sequence[tuple[str, SectionFunction]], argv: Sequence[str] | None, started: float,
              description: str | None = None) -> dict[str, Any]:
    """Parse the options, record the environment, run the sections under the budget; return the results.

    Parameters
    ----------
    sections : sequence of (name, function)
        The sections in order; each takes (Context, seconds allotted) and returns its figures.
    argv : sequence of str or None
        The command line (None: sys.argv).
    started : float
        The ``time.perf_counter()`` the budget counts from (gpu_check: its start, imports included).
    description : str, optional
        The ``--help`` text.
    """
    args = parse_args(sections, argv, description)
    device = get_device(args.device)
    smoke = bool(args.smoke or args.quick or device.type != "cuda")
    judged = not smoke
    budget = Budget(args.budget_s, started=started)
    sizes = resolve_sizes(smoke, args.budget_s, args.workers, args.cpu_workers)
    report = Report(resolve_out(args.out))
    report.results["environment"] = environment(device, smoke, args.budget_s)
    report.results["sizes"] = asdict(sizes)
    report.save(judged)
    with scratch_folder(args.work_dir, args.keep_work) as work:
        context = Context(device=device, sizes=sizes, work=work, smoke=smoke, seed=args.seed)
        run_sections(report, sections, context, budget, args.sections, judged)
    report.results["total_seconds"] = time.perf_counter() - budget.started
    report.save(judged)
    print_summary(report)
    return report.results
