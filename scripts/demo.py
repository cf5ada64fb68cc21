"""`make demo`: the Temporal Frequency Deviation experiment on synthetic data, on any laptop (2 CPU cores, no GPU).

Steps, each timed: generate a synthetic SSv2-format dataset (VP9 .webm + label JSONs), build its shards, pretrain
the 2D backbone on single synthetic images (``pretrain.py``, the stand-in for ImageNet initialisation), then train,
every model starting from that backbone and with one preset (``train.py --preset demo``): vanilla TSM at 16 frames
(tsm16), TSM-FFN at 4/8/16 with the official loss (ffn), separated TSM at 4 and 8 frames (tsm4, tsm8); evaluate every
model on the validation split at 2, 4, 6, 8, 12 and 16 frames; print the table and the margins; write
``<runs>/tfd.json``, ``<runs>/tfd.png`` (top-1 against frames and against GFLOPs per video) and
``<runs>/tfd_curves.png`` (validation top-1 per epoch).

The demo preset trains 40 epochs. ``--study ablations`` (``make ablations``) trains the paper's ablation rows of
TSM-FFN on the same data and backbone (one shared BN set, no Weight Alteration, lambda 0) and the variant with CE on
every frame count (labelled: not the official loss), and writes ``<runs>/ablations.json``. ``--study mechanism``
trains the comparisons of the reproduction note (every model at 20 epochs, random start, lambda 0 / 0.5 / 1) and writes
``<runs>/mechanism.json``. Every study model trains 20 epochs (``STUDY_EPOCHS``), where the official loss has not
converged yet and the ingredients' effects show; ``<model>_e20`` is a main model at 20 epochs.

Trainings run two at a time on a machine with two or more cores (``--jobs``); each is seeded and single-threaded,
so its numbers do not depend on that.

Usage::

    python scripts/demo.py --runs runs/demo [--seeds 0 1 2] [--started-at UNIX_TIME] [--workers N]
    python scripts/demo.py --runs runs/demo --study ablations

With several seeds the data stay the same (data seed 0) and the training seed varies; every cell reports the mean
and the min / max over seeds. Everything lives under ``--runs``. A rerun reuses the dataset, the shards and every
finished training with identical settings (``--fresh`` starts over); an interrupted training resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as `python scripts/demo.py`: the repository's packages import from here

from common.atomic import write_json_atomic  # noqa: E402
from common.machine import machine_record  # noqa: E402
from engine.backbone_cache import (  # noqa: E402
    BACKBONE_FILE,
    RECORD_FILE,
    backbone_settings,
    cache_folder,
    file_sha256,
)
from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.config import PRESETS  # noqa: E402
from engine.reporting import format_table, plot_top1  # noqa: E402

DATA_SEED = 0
VIDEOS_PER_CLASS = 250
SPLIT_FRACTIONS = (0.8, 0.2, 0.0)
CLIP_FRAMES = 48
FRAME_SIZE = "32x32"
TRAIN_SHARDS = 16
EVAL_SHARDS = 4
EVAL_FRAMES = (2, 4, 6, 8, 12, 16)
EVAL_BATCH = 50
LOADER_WORKERS = 1
DEFAULT_THREADS = 1
DEFAULT_JOBS = min(2, os.cpu_count() or 1)
RUN_RECORD = "demo_run.json"
CPU_RECORD = "demo_cpu.json"  # CPU seconds of a run's training (its processes), kept for reruns that reuse it
COMMITTED_RESULTS = REPO_ROOT / "docs" / "results" / "tfd.json"
TRAIN_LOG = "train.log"
POLL_S = 1.0
OFFICIAL_LOSS = "official: CE on 16F + KL(16F -> 4F) + KL(16F -> 8F), lambda 1, temperature 1"
VARIANT_LOSS = "NOT official: CE on every frame count (4, 8, 16F) + the same KL terms"
FFN_ARGS = ["--mode", "ffn", "--frames", "4", "8", "16", "--val-frames", "4", "8", "16"]
MODELS: dict[str, list[str]] = {
    "tsm16": ["--mode", "vanilla", "--frames", "16"],
    "ffn": FFN_ARGS,
    "tsm4": ["--mode", "vanilla", "--frames", "4"],
    "tsm8": ["--mode", "vanilla", "--frames", "8"],
}
MODEL_LOSSES = {"tsm16": "cross-entropy", "ffn": OFFICIAL_LOSS, "tsm4": "cross-entropy", "tsm8": "cross-entropy",
                "ffn_ce_all": VARIANT_LOSS}
VARIANT_NAME = "ffn_ce_all"
VARIANT_ARGS = [*FFN_ARGS, "--ce-all-frames"]
PRETRAINED, RANDOM = "pretrained", "random"
STUDY_EPOCHS = 20  # the studies' schedule: half the demo preset's, where the official loss has not converged yet


class StudyModel(NamedTuple):
    """One model of a study: train.py arguments beyond the preset, start, loss, and epochs (None: the preset's)."""

    train_args: list[str]
    start: str
    loss: str
    epochs: int | None = STUDY_EPOCHS


# Every study model uses the demo preset, data and seed, at STUDY_EPOCHS; `<name>_e20` is a main model at 20 epochs.
SHORT_RUNS: dict[str, StudyModel] = {f"{name}_e{STUDY_EPOCHS}": StudyModel(MODELS[name], PRETRAINED, MODEL_LOSSES[name])
                                     for name in MODELS}
STUDIES: dict[str, dict[str, StudyModel]] = {
    "ablations": {
        f"ffn_e{STUDY_EPOCHS}": SHORT_RUNS[f"ffn_e{STUDY_EPOCHS}"],
        "ffn_shared_bn": StudyModel([*FFN_ARGS, "--no-private-norms"], PRETRAINED, OFFICIAL_LOSS + "; one shared BN set"),
        "ffn_no_wa": StudyModel([*FFN_ARGS, "--no-weight-alteration"], PRETRAINED,
                                OFFICIAL_LOSS + "; no Weight Alteration"),
        "ffn_lam0": StudyModel([*FFN_ARGS, "--lam", "0"], PRETRAINED, "CE on 16F only (lambda 0)"),
        VARIANT_NAME: StudyModel(VARIANT_ARGS, PRETRAINED, VARIANT_LOSS),
    },
    "mechanism": {
        **SHORT_RUNS,
        "ffn_lam0.5": StudyModel([*FFN_ARGS, "--lam", "0.5"], PRETRAINED, "CE on 16F + 0.5 x (the KL terms)"),
        "ffn_lam0": StudyModel([*FFN_ARGS, "--lam", "0"], PRETRAINED, "CE on 16F only (lambda 0)"),
        **{f"{name}_random": StudyModel(MODELS[name], RANDOM, MODEL_LOSSES[name]) for name in MODELS},
    },
}


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="everything goes here (data, shards, runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (mean and spread)")
    parser.add_argument("--started-at", type=float, default=None, help="unix time `make demo` started (set-up)")
    parser.add_argument("--workers", type=int, default=None, help="processes for generation and shards")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="torch threads of each training and evaluation (default 1: the numbers do not depend "
                             "on the core count, and other jobs on the machine do not oversubscribe it)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help="trainings run side by side (default: 2 on a machine with 2 or more cores, else 1)")
    parser.add_argument("--videos-per-class", type=int, default=VIDEOS_PER_CLASS)
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (smoke runs)")
    parser.add_argument("--fresh", action="store_true", help="delete <runs> first and redo everything")
    parser.add_argument("--start", choices=(PRETRAINED, RANDOM), default=PRETRAINED,
                        help="initialise every model from the pretrained backbone (the paper's protocol) or randomly")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="override pretrain.py's epochs (smoke runs)")
    parser.add_argument("--pretrain-images-per-class", type=int, default=None,
                        help="override pretrain.py's training and validation images per class (smoke runs)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="with --study: train only these of the study's models (default: all of them)")
    parser.add_argument("--study-only", action="store_true",
                        help="with --study: train and tabulate the study models alone (not the main models)")
    parser.add_argument("--study", choices=sorted(STUDIES), default=None,
                        help="train and tabulate a study instead of the main table (after the main models)")
    parser.add_argument("--archs", nargs="*", choices=FAMILIES, default=None, metavar="FAMILY",
                        help="the architecture table instead: vanilla, separated and FFN models of every family "
                             f"({', '.join(FAMILIES)}; default all) on the demo's data; writes <runs>/archs.json "
                             "and archs.png")
    return parser


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished child process (and the processes they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """Named wall-clock durations, in order, and the CPU seconds of each step's processes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def run(self, name: str, command: Sequence[str]) -> None:
        """Run a command (output streams through), record its wall and CPU time, stop the demo if it fails."""
        print(f"\n== {name}: {' '.join(command)}", flush=True)
        start, cpu_start = time.perf_counter(), children_cpu_seconds()
        result = subprocess.run(list(command), cwd=REPO_ROOT, check=False)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + children_cpu_seconds() - cpu_start
        if result.returncode != 0:
            raise SystemExit(f"demo: step {name!r} failed (exit {result.returncode}); see the output above")


def generate_data(args: argparse.Namespace, data_root: Path, timer: Timer) -> dict[str, Any]:
    """Generate the synthetic dataset unless one with the same settings is there; return generator.json."""
    summary_path = data_root / "labels" / "generator.json"
    wanted = {"videos_per_class": args.videos_per_class, "seed": DATA_SEED, "split_fractions": list(SPLIT_FRACTIONS)}
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if all(summary.get(key) == value for key, value in wanted.items()):
            print(f"\n== generation: reusing {data_root}", flush=True)
            timer.seconds["generation"] = 0.0
            return summary
    command = [sys.executable, "-m", "preprocess.synthetic", "--root", str(data_root), "--videos-per-class",
               str(args.videos_per_class), "--size", FRAME_SIZE, "--frames", str(CLIP_FRAMES), "--seed",
               str(DATA_SEED), "--split", *map(str, SPLIT_FRACTIONS), "--force"]
    if args.workers:
        command += ["--workers", str(args.workers)]
    timer.run("generation", command)
    return json.loads(summary_path.read_text(encoding="utf-8"))


def build_shards(args: argparse.Namespace, data_root: Path, shards: Path, timer: Timer) -> None:
    """Build the train and validation shards at native size (a rerun skips finished shards)."""
    command = [sys.executable, "-m", "preprocess.make_shards", "--data-root", str(data_root), "--out", str(shards),
               "--splits", "train", "validation", "--short-side", "0", "--train-shards", str(TRAIN_SHARDS),
               "--eval-shards", str(EVAL_SHARDS)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    timer.run("shards", command)


def pretrain_command(args: argparse.Namespace, runs: Path, arch: str | None = None) -> tuple[list[str], Path]:
    """Return pretrain.py's command for a model's backbone (None: pretrain.py's default, the TSM `tiny`) and the
    cache folder it writes (its settings' hash)."""
    command = [sys.executable, "pretrain.py", "--output-root", str(runs / "pretrain"),
               "--threads", str(args.threads)]
    overrides: dict[str, Any] = {}
    if arch is not None:
        command += ["--arch", arch]
        overrides["arch"] = arch
    if args.pretrain_epochs:
        command += ["--epochs", str(args.pretrain_epochs)]
        overrides["epochs"] = args.pretrain_epochs
    if args.pretrain_images_per_class:
        command += ["--images-per-class", str(args.pretrain_images_per_class),
                    "--val-images-per-class", str(args.pretrain_images_per_class)]
        overrides.update(images_per_class=args.pretrain_images_per_class,
                         val_images_per_class=args.pretrain_images_per_class)
    return command, cache_folder(runs / "pretrain", backbone_settings(overrides))


def pretrain_backbone(args: argparse.Namespace, runs: Path, timer: Timer) -> tuple[Path, dict[str, Any]]:
    """Pretrain the 2D backbone on single images (cached by its settings); return its path and pretrain.json."""
    command, folder = pretrain_command(args, runs)
    timer.run("pretraining", command)
    return folder / BACKBONE_FILE, json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))


def report_backbone_match(pretraining: dict[str, Any]) -> None:
    """Print one line when the backbone is not the one docs/results was made with (numbers will then differ)."""
    committed = committed_backbone_sha256()
    if committed is not None and pretraining.get("sha256") != committed:
        print(f"note: this machine's backbone (sha256 {str(pretraining.get('sha256'))[:12]}...) is not the committed "
              f"one ({committed[:12]}...): numbers will differ from docs/results within the measured spread "
              "(docs/results.md, Reproducibility)", flush=True)


def committed_backbone_sha256() -> str | None:
    """The SHA-256 of the backbone the committed results (docs/results/tfd.json) were made with, if recorded."""
    try:
        settings = json.loads(COMMITTED_RESULTS.read_text(encoding="utf-8"))["settings"]
        return settings["pretraining"]["sha256"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None


def train_command(mode_args: list[str], shards: Path, output: Path, seed: int, num_classes: int,
                  args: argparse.Namespace, backbone: Path | None, epochs: int | None = None,
                  val_every: int = 1) -> list[str]:
    """Return the train.py command of one demo model (the demo preset, validation after every epoch by default).

    ``epochs`` sets a study's schedule; ``--epochs`` on the demo's command line (smoke runs) overrides every model's.
    """
    command = [sys.executable, "train.py", *mode_args, "--preset", "demo", "--shards", str(shards), "--output",
               str(output), "--seed", str(seed), "--num-classes", str(num_classes), "--workers", str(LOADER_WORKERS),
               "--threads", str(args.threads), "--val-every", str(val_every), "--no-progress",
               "--pretrained", str(backbone) if backbone else "none"]
    epochs = args.epochs or epochs
    if epochs:
        command += ["--epochs", str(epochs)]
    return command


def run_record(command: list[str]) -> dict[str, Any]:
    """Return what identifies a training: its arguments and the demo preset they resolve against."""
    return {"command": command[1:], "preset": PRESETS["demo"]}


def finished_run(output: Path, command: list[str]) -> str:
    """Return "done" when a run with this exact command finished, "partial" when it can resume, else "new"."""
    record = output / RUN_RECORD
    last = output / "last.pt"
    if not record.is_file() or not last.is_file():
        return "new"
    if json.loads(record.read_text(encoding="utf-8")) != run_record(command):
        return "new"
    checkpoint = load_checkpoint(last)
    epochs = checkpoint["metrics"]["settings"]["epochs"]
    return "done" if checkpoint["epoch"] >= epochs else "partial"


class Training(NamedTuple):
    """One planned training (or another job run side by side): its label, command (with --resume when it continues),
    folder, and the name of its log in that folder when it runs beside others."""

    label: str
    command: list[str]
    output: Path
    log: str = TRAIN_LOG


def plan_training(name: str, mode_args: list[str], shards: Path, output: Path, seed: int, num_classes: int,
                  args: argparse.Namespace, timer: Timer, backbone: Path | None,
                  epochs: int | None, val_every: int = 1) -> tuple[Training | None, list[str]]:
    """Prepare one model's folder; return its training (None: an identical finished run is reused) and command."""
    command = train_command(mode_args, shards, output, seed, num_classes, args, backbone, epochs, val_every)
    state = finished_run(output, command)
    label = f"train {name} (seed {seed})"
    if state == "done":
        print(f"\n== {label}: reusing {output / 'last.pt'}", flush=True)
        timer.seconds[label] = 0.0
        return None, command
    if state == "new" and output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / RUN_RECORD, run_record(command))
    return Training(label, command + (["--resume"] if state == "partial" else []), output), command


def run_trainings(trainings: list[Training], jobs: int, timer: Timer, phase: str = "training") -> None:
    """Run the trainings, ``jobs`` at a time; with more than one, each writes its output to ``<output>/<log>``.

    Each training is seeded and single-threaded, so its numbers do not depend on how many run side by side.
    """
    if jobs <= 1 or len(trainings) <= 1:
        for training in trainings:
            timer.run(training.label, training.command)
            record_cpu(training, timer.cpu_seconds[training.label])
        return
    print(f"\n== {phase} {len(trainings)} runs, {jobs} at a time (each one's output: <run>/{trainings[0].log})",
          flush=True)
    start = time.perf_counter()
    waiting, running = list(trainings), []
    while waiting or running:
        while waiting and len(running) < jobs:
            training = waiting.pop(0)
            log = (training.output / training.log).open("w", encoding="utf-8")
            process = subprocess.Popen(training.command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            running.append((training, process, log, time.perf_counter()))
            print(f"   started {training.label}: {' '.join(training.command)}", flush=True)
        time.sleep(POLL_S)
        for item in list(running):
            cpu_start = children_cpu_seconds()
            if item[1].poll() is None:
                continue
            timer.cpu_seconds[item[0].label] = children_cpu_seconds() - cpu_start  # this child alone was reaped
            running.remove(item)
            finish_training(*item, running, timer)
            record_cpu(item[0], timer.cpu_seconds[item[0].label])
    timer.seconds[f"{phase} ({len(trainings)} runs, {jobs} at a time)"] = time.perf_counter() - start


def record_cpu(training: Training, seconds: float) -> None:
    """Add a finished training's CPU seconds to its run's CPU record (a resumed run adds to what it took before)."""
    if training.log != TRAIN_LOG:
        return
    path = training.output / CPU_RECORD
    before = json.loads(path.read_text(encoding="utf-8"))["cpu_s"] if path.is_file() else 0.0
    write_json_atomic(path, {"cpu_s": round(before + seconds, 1)})


def run_cpu_seconds(checkpoints: dict[str, Path]) -> dict[str, float | None]:
    """{"name@seedS": CPU seconds of its training} from each run's CPU record (None where none was kept)."""
    seconds = {}
    for key, checkpoint in checkpoints.items():
        path = checkpoint.parent / CPU_RECORD
        seconds[key] = json.loads(path.read_text(encoding="utf-8"))["cpu_s"] if path.is_file() else None
    return seconds


def finish_training(training: Training, process: subprocess.Popen, log: Any, started: float,
                    running: list[Any], timer: Timer) -> None:
    """Record a finished training's time and last line; stop every other one and the demo if it failed."""
    log.close()
    seconds = time.perf_counter() - started
    timer.seconds[training.label] = seconds
    lines = (training.output / training.log).read_text(encoding="utf-8", errors="replace").splitlines()
    if process.returncode == 0:
        print(f"   finished {training.label} in {seconds:.0f} s: {lines[-1] if lines else ''}", flush=True)
        return
    for _, other, other_log, _ in running:
        other.terminate()
        other.wait()
        other_log.close()
    print("\n".join(lines[-20:]))
    raise SystemExit(f"demo: step {training.label!r} failed (exit {process.returncode}); "
                     f"see {training.output / training.log}")


def evaluate_all(checkpoints: dict[str, Path], shards: Path, output: Path, tag: str, args: argparse.Namespace,
                 timer: Timer) -> dict[str, Any]:
    """Evaluate every given checkpoint in one pass over the validation data; return evaluate.py's JSON."""
    command = [sys.executable, "evaluate.py", "--checkpoints", *[f"{key}={path}" for key, path in checkpoints.items()],
               "--frames", *map(str, EVAL_FRAMES), "--shards", str(shards), "--output", str(output), "--tag", tag,
               "--workers", str(LOADER_WORKERS), "--batch-size", str(EVAL_BATCH),
               "--threads", str(args.threads)]
    timer.run("evaluation", command)
    return json.loads((output / f"{tag}.json").read_text(encoding="utf-8"))


def aggregate(per_seed: dict[str, Any], names: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Return {name: entry} with top-1 / top-5 means over seeds, min / max and the per-seed values."""
    models = {}
    for name in names:
        entries = [per_seed["models"][f"{name}@seed{seed}"] for seed in seeds]
        eval_frames = sorted(entries[0]["top1"], key=int)
        entry: dict[str, Any] = {"trained_frames": entries[0]["trained_frames"], "split": entries[0]["split"],
                                 "n": entries[0]["n"], "seeds": list(seeds)}
        for metric in ("top1", "top5"):
            values = {frames: [item[metric][frames] for item in entries] for frames in eval_frames}
            entry[metric] = {frames: round(statistics.fmean(items), 2) for frames, items in values.items()}
            entry[f"{metric}_min"] = {frames: min(items) for frames, items in values.items()}
            entry[f"{metric}_max"] = {frames: max(items) for frames, items in values.items()}
            entry[f"{metric}_by_seed"] = values
        entry["checkpoints"] = [item["checkpoint"] for item in entries]
        entry.update(aggregate_costs(name, entries, eval_frames))
        models[name] = entry
    return models


def aggregate_costs(name: str, entries: Sequence[dict[str, Any]], eval_frames: Sequence[str]) -> dict[str, Any]:
    """Return {"gflops": the seeds' common count, "latency_ms": mean over seeds} ({} for entries without costs).

    Every seed trains the same network, so the GFLOPs must agree; latency is None where it was not measured.
    """
    if not all("gflops" in item for item in entries):
        return {}
    gflops = entries[0]["gflops"]
    if any(item["gflops"] != gflops for item in entries):
        raise SystemExit(f"demo: the seeds of {name} count different GFLOPs; they must share one network")
    latency = {}
    for frames in eval_frames:
        values = [item.get("latency_ms", {}).get(frames) for item in entries]
        latency[frames] = None if None in values else round(statistics.fmean(values), 3)
    return {"gflops": gflops, "latency_ms": latency}


def margins(models: dict[str, Any], ffn_name: str = "ffn") -> list[dict[str, Any]]:
    """Return the demo's acceptance margins (and the two reported differences) from mean top-1 values."""
    top1 = {name: {int(frames): value for frames, value in entry["top1"].items()} for name, entry in models.items()}
    tsm16, ffn = top1["tsm16"], top1[ffn_name]
    checks = [
        ("tsm16@4F <= tsm16@16F - 25", tsm16[4], tsm16[16] - 25, tsm16[4] <= tsm16[16] - 25),
        (f"{ffn_name}@4F >= tsm16@4F + 30", ffn[4], tsm16[4] + 30, ffn[4] >= tsm16[4] + 30),
        (f"{ffn_name}@16F >= tsm16@16F - 3", ffn[16], tsm16[16] - 3, ffn[16] >= tsm16[16] - 3),
    ]
    if "tsm4" in top1:  # a study's table holds ffn and tsm16 only
        checks.append(("tsm4@4F >= tsm16@16F - 10", top1["tsm4"][4], tsm16[16] - 10, top1["tsm4"][4] >= tsm16[16] - 10))
    rows = [{"rule": rule, "value": round(value, 2), "bound": round(bound, 2), "pass": bool(ok)}
            for rule, value, bound, ok in checks]
    if "tsm4" in top1:
        rows.append({"rule": f"{ffn_name}@4F - tsm4@4F (reported)", "value": round(ffn[4] - top1["tsm4"][4], 2)})
    if "tsm8" in top1:
        rows.append({"rule": f"{ffn_name}@8F - tsm8@8F (reported)", "value": round(ffn[8] - top1["tsm8"][8], 2)})
    return rows


def print_margins(rows: list[dict[str, Any]]) -> None:
    """Print the margins, one per line."""
    for row in rows:
        verdict = "" if "pass" not in row else ("  PASS" if row["pass"] else "  MISSED")
        bound = "" if "bound" not in row else f" (bound {row['bound']:.2f})"
        print(f"  {row['rule']}: {row['value']:.2f}{bound}{verdict}")


def format_spread_table(models: dict[str, Any]) -> str:
    """Return the top-1 table as mean [min-max] per cell (several seeds)."""
    eval_frames = sorted(next(iter(models.values()))["top1"], key=int)
    header = ["model"] + [f"{frames}F" for frames in eval_frames]
    rows = [header]
    for name, entry in models.items():
        cells = [(entry["top1"][frames], entry["top1_min"][frames], entry["top1_max"][frames])
                 for frames in eval_frames]
        rows.append([name] + [f"{mean:.1f} [{low:.1f}-{high:.1f}]" for mean, low, high in cells])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def print_times(timer: Timer, setup_s: float | None, total_s: float) -> None:
    """Print the time breakdown."""
    print("\ntime breakdown (wall seconds)")
    if setup_s is not None:
        print(f"  {'set-up (make, venv)':<32} {setup_s:8.1f}")
    for name, seconds in timer.seconds.items():
        print(f"  {name:<32} {seconds:8.1f}")
    if any(name.startswith("training (") for name in timer.seconds):
        print("  (runs side by side overlap: the 'training' line is their wall time)")
    print(f"  {'total':<32} {total_s:8.1f}  ({total_s / 60:.1f} min)")


def settings_record(args: argparse.Namespace, summary: dict[str, Any], losses: dict[str, str],
                    commands: dict[str, str], n_val: int, backbone: Path | None,
                    pretraining: dict[str, Any] | None) -> dict[str, Any]:
    """Return tfd.json's "settings": data, start, preset, loss per model, seeds, evaluation protocol and machine."""
    preset = dict(PRESETS["demo"])
    if args.epochs:
        preset["epochs"] = args.epochs
    return {
        "seeds": list(args.seeds), "data_seed": DATA_SEED, "classes": summary.get("templates"),
        "num_classes": summary.get("num_classes"), "videos_per_class": summary.get("videos_per_class"),
        "counts": summary.get("counts"), "clip_frames": CLIP_FRAMES, "frame_size": FRAME_SIZE,
        "n_validation": n_val, "split": "validation", "eval_frames": list(EVAL_FRAMES),
        "protocol": "1 clip x full 32x32 frame (test resize 32, centre crop 32)",
        "start": args.start, "preset": preset, "study_epochs": STUDY_EPOCHS, "loss": losses, "commands": commands,
        "pretraining": None if pretraining is None else {
            "checkpoint": str(backbone), "sha256": pretraining["sha256"], "settings": pretraining["settings"],
            "val_top1": pretraining["val_top1"], "train_s": pretraining["train_s"]},
        "machine": machine_record(),
    }


def write_plot(report: dict[str, Any], path: Path) -> Any:
    """Plot tfd.json's top-1 against frames (mean with a min-max band over seeds).

    Returns
    -------
    matplotlib.figure.Figure
        engine.reporting.plot_top1's (closed) figure: two axes when every model has GFLOPs, else one.
    """
    seeds = report["settings"]["seeds"]
    spread = " (mean, band: min-max)" if len(seeds) > 1 else ""
    title = (f"Synthetic TFD: top-1 on {report['settings']['n_validation']} validation videos, "
             f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}{spread}")
    labels = {VARIANT_NAME: f"{VARIANT_NAME} (CE on every frame count: NOT official)", "ffn": "ffn (official loss)"}
    order = [name for name in [*MODELS, VARIANT_NAME] if name in report["models"]]
    models = {name: report["models"][name] for name in order}
    return plot_top1(models, report["settings"]["eval_frames"], path, title, labels)


def run_histories(checkpoints: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """Return {"name@seedS": the per-epoch history in the run's checkpoint}, each checkpoint read once."""
    return {key: load_checkpoint(path)["metrics"]["history"] for key, path in checkpoints.items()}


def validation_curves(histories: dict[str, list[dict[str, Any]]], names: Sequence[str],
                      seeds: Sequence[int]) -> dict[str, dict[str, list[float]]]:
    """Return {name: {frames: per-epoch validation top-1, mean over seeds}} from each run's history."""
    curves: dict[str, dict[str, list[float]]] = {}
    for name in names:
        per_seed = []
        for seed in seeds:
            history = histories[f"{name}@seed{seed}"]
            per_seed.append([row.get("val_top1_at", {str(row.get("val_frames")): row.get("val_top1")})
                             for row in history if "val_top1" in row])
        eval_frames = sorted(per_seed[0][0], key=int) if per_seed[0] else []
        curves[name] = {frames: [round(statistics.fmean(run[epoch][frames] for run in per_seed), 2)
                               for epoch in range(min(len(run) for run in per_seed))] for frames in eval_frames}
    return curves


def run_seconds(histories: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Return {"name@seedS": seconds}: each training's epoch times (training and its validation) summed from its
    history, so a rerun that reuses the runs still reports what they took."""
    return {key: round(sum(row.get("epoch_s", 0.0) for row in history), 1) for key, history in histories.items()}


def write_curves_plot(curves: dict[str, dict[str, list[float]]], path: Path, title: str) -> None:
    """Plot validation top-1 against epoch: each FFN branch against the single-count models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.5, 5.0))
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    styles = {"4": ":", "8": "-.", "16": "-"}  # line style = frame count, colour = model
    for index, (name, curve_by_frames) in enumerate(curves.items()):
        for frames, values in curve_by_frames.items():
            axis.plot(range(1, len(values) + 1), values, styles.get(frames, "--"), color=colours[index % len(colours)],
                      marker="o", markersize=2.0, linewidth=1.4, label=f"{name} at {frames}F")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation top-1 (%)")
    axis.set_ylim(0, 100)
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def train_set(runs: Path, shards: Path, num_classes: int, args: argparse.Namespace, timer: Timer,
              entries: dict[str, tuple[list[str], Path | None, int | None]]) -> tuple[dict[str, Path], dict[str, str]]:
    """Train {name: (train arguments, backbone, epochs)} for every seed; return checkpoints and commands."""
    checkpoints: dict[str, Path] = {}
    commands: dict[str, str] = {}
    trainings: list[Training] = []
    for seed in args.seeds:
        for name, (mode_args, backbone, epochs) in entries.items():
            output = runs / f"seed{seed}" / name
            training, command = plan_training(name, mode_args, shards, output, seed, num_classes, args, timer,
                                              backbone, epochs)
            trainings += [training] if training else []
            checkpoints[f"{name}@seed{seed}"] = output / "last.pt"
            commands[name] = shlex.join(command[1:])
    run_trainings(trainings, args.jobs, timer)
    return checkpoints, commands


def main_models(runs: Path, shards: Path, num_classes: int, args: argparse.Namespace, timer: Timer,
                backbone: Path | None) -> tuple[dict[str, Any], dict[str, Path], dict[str, str]]:
    """Train and evaluate tsm16, ffn (the official loss), tsm4 and tsm8."""
    checkpoints, commands = train_set(runs, shards, num_classes, args, timer,
                                      {name: (mode_args, backbone, None) for name, mode_args in MODELS.items()})
    per_seed = evaluate_all(checkpoints, shards, runs, "tfd_per_seed", args, timer)
    return aggregate(per_seed, list(MODELS), args.seeds), checkpoints, commands


def run_study(study: str, runs: Path, shards: Path, num_classes: int, args: argparse.Namespace, timer: Timer,
              backbone: Path | None) -> tuple[dict[str, Any], dict[str, str], dict[str, str], dict[str, Path]]:
    """Train and evaluate the models of one study; return (models, commands, losses, checkpoints)."""
    unknown = sorted(set(args.models or []) - set(STUDIES[study]))
    if unknown:
        raise SystemExit(f"demo: {unknown} are not models of the {study} study; choose from {list(STUDIES[study])}")
    entries = {name: (model.train_args, backbone if model.start == PRETRAINED else None, model.epochs)
               for name, model in STUDIES[study].items() if not args.models or name in args.models}
    checkpoints, commands = train_set(runs, shards, num_classes, args, timer, entries)
    per_seed = evaluate_all(checkpoints, shards, runs, f"{study}_per_seed", args, timer)
    losses = {name: model.loss for name, model in STUDIES[study].items() if name in entries}
    return aggregate(per_seed, list(entries), args.seeds), commands, losses, checkpoints


def print_report(models: dict[str, Any], seeds: Sequence[int], margin_sets: dict[str, Any]) -> None:
    """Print the top-1 table and the margins."""
    print("\ntop-1 (%) on the validation split" + (" (mean [min-max] over seeds)" if len(seeds) > 1 else ""))
    print(format_spread_table(models) if len(seeds) > 1 else format_table(models, EVAL_FRAMES, second=None))
    for label, rows in margin_sets.items():
        print(f"\nmargins ({label.replace('_', ' ')})")
        print_margins(rows)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Run every step; return tfd.json's content (or the study's JSON with --study)."""
    begin = time.time()
    setup_s = begin - args.started_at if args.started_at else None
    runs = args.runs.resolve()
    if args.fresh and runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    data_root, shards, timer = runs / "data", runs / "shards", Timer()
    summary = generate_data(args, data_root, timer)
    build_shards(args, data_root, shards, timer)
    num_classes = int(summary["num_classes"])
    backbone, pretraining = pretrain_backbone(args, runs, timer)
    report_backbone_match(pretraining)
    main_backbone = backbone if args.start == PRETRAINED else None
    if args.start == RANDOM:
        runs = runs / "random_start"
    models: dict[str, Any] = {}
    commands: dict[str, str] = {}
    margin_sets: dict[str, Any] = {}
    checkpoints: dict[str, Path] = {}
    if not (args.study and args.study_only):
        models, checkpoints, commands = main_models(runs, shards, num_classes, args, timer, main_backbone)
        margin_sets["official_loss"] = margins(models)
    losses = {name: MODEL_LOSSES[name] for name in models}
    report_name = "tfd"
    if args.study:
        report_name = args.study
        study_models, study_commands, study_losses, study_checkpoints = run_study(
            args.study, runs, shards, num_classes, args, timer, backbone)
        models = {**models, **study_models}
        commands.update(study_commands)
        losses.update(study_losses)
        checkpoints.update(study_checkpoints)
    histories = run_histories(checkpoints)
    curves = validation_curves(histories, list(models), args.seeds)
    report = {
        "settings": settings_record(args, summary, losses, commands, next(iter(models.values()))["n"], backbone,
                                    pretraining),
        "models": models,
        "margins": margin_sets,
        "curves": curves,
    }
    report["settings"]["run_seconds"] = run_seconds(histories)
    total_s = time.time() - begin + (setup_s or 0.0)
    report["settings"]["timings_s"] = {"setup": None if setup_s is None else round(setup_s, 1),
                                       **{k: round(v, 1) for k, v in timer.seconds.items()},
                                       "total": round(total_s, 1)}
    write_json_atomic(runs / f"{report_name}.json", report)
    print_report(models, args.seeds, margin_sets)
    print_times(timer, setup_s, total_s)
    seeds_text = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}"
    curves_path = runs / f"{report_name}_curves.png"
    if args.study is None:
        write_plot(report, runs / "tfd.png")
        write_curves_plot(curves, curves_path,
                          f"Synthetic demo: validation top-1 per epoch ({args.start} start, mean of {seeds_text})")
        print(f"\nwrote {runs / 'tfd.json'}, {runs / 'tfd.png'} and {curves_path}")
    else:
        study_curves = {name: by_frames for name, by_frames in curves.items()
                        if name in STUDIES[args.study] or name in ("ffn", "tsm16")}
        write_curves_plot(study_curves, curves_path,
                          f"Synthetic demo, {args.study}: validation top-1 per epoch (mean of {seeds_text})")
        print(f"\nwrote {runs / f'{report_name}.json'} and {curves_path}")
    return report


# ----------------------------------------------------------------------------------------------------------------
# The architecture table (`make demo-archs`, `--archs`): the official README's first table on the demo's data


class ArchExperiment(NamedTuple):
    """One family's row of the architecture table.

    Attributes
    ----------
    arch : str
        The family's small CPU model (a registered name).
    frames : tuple of int
        The low, middle and high frame counts (L, M, H): the vanilla model trains at H, the separated models at L
        and M, the FFN at all three.
    preset : dict
        Every training setting of the family's vanilla, separated and FFN models (the same for the three kinds).
    """

    arch: str
    frames: tuple[int, int, int]
    preset: dict[str, Any]


# The settings every family shares with `make demo` (the demo preset): the cosine schedule, AdamW, the whole
# 32x32 frame for training (no multi-scale crops) and evaluation, no dropout, the official loss with lambda 1.
# The preset of each family, frozen before the final runs (`val_every` only sets how often a run validates):
#
# | family    | model          | frames (L/M/H)       | epochs | lr    | batch | warm-up | weight decay | crop |
# |-----------|----------------|----------------------|--------|-------|-------|---------|--------------|------|
# | tsm       | tiny           | 4 / 8 / 16           | 40     | 3e-3  | 32    | 1       | 0.05         | 32   |
# | tea       | tea_tiny       | 4 / 8 / 16           | 30     | 3e-3  | 32    | 1       | 0.05         | 32   |
# | slowfast  | slowfast_tiny  | 4 / 8 / 16 (Fast)    | 15     | 3e-3  | 32    | 1       | 0.05         | 32   |
# | uniformer | uniformer_tiny | 4 / 8 / 16           | 15     | 3e-3  | 32    | 1       | 0.05         | 32   |
#
# TSM's row is the demo preset itself, so `make demo-archs` reuses the runs of `make demo`. The other families
# train fewer epochs so that the three of them fit the hour on two cores (a TEA step costs about 2.8x a TSM step,
# SlowFast's 1.2x, UniFormer's 1.4x): SlowFast and UniFormer 15, TEA 30, because TEA's models stay near chance for
# their first four epochs and its FFN reached only 94.3% at 16F after 15 (99.5% after 30). SlowFast counts Fast
# frames (the Slow pathway takes a quarter of them: 1 / 2 / 4); its paper counts 16 / 32 / 64 need more frames than
# the demo's 48-frame videos hold, so the demo takes a quarter of them, the same counts as the other families.
ARCH_SETTINGS = ("arch", "epochs", "lr", "batch_size", "warmup_epochs", "optimizer", "weight_decay", "schedule",
                 "dropout", "crop_size", "test_resize", "multi_scale")
DEMO_ARCH_PRESET = {key: PRESETS["demo"][key] for key in ARCH_SETTINGS} | {"val_every": 1}
FAMILY_EPOCHS = {"tea": 30, "slowfast": 15, "uniformer": 15}
ARCH_EXPERIMENTS: dict[str, ArchExperiment] = {
    "tsm": ArchExperiment("tiny", (4, 8, 16), DEMO_ARCH_PRESET),
} | {
    family: ArchExperiment(f"{family}_tiny", (4, 8, 16), DEMO_ARCH_PRESET | {"arch": f"{family}_tiny",
                                                                             "epochs": epochs, "val_every": 5})
    for family, epochs in FAMILY_EPOCHS.items()
}
FAMILIES = tuple(ARCH_EXPERIMENTS)
MAKE_DEMO_FAMILY = "tsm"  # the family whose backbone and four runs `make demo` makes (demo-archs reuses them)
ARCHS_REPORT = "archs"
ARCH_KINDS = ("ffn", "vanilla", "st_middle", "st_low")  # training order: the longest runs first
PRETRAIN_LOG = "pretrain.log"
EVAL_LOG = "evaluate.log"
LOWEST_EVAL_FRAMES = 2


def arch_model_names(family: str) -> dict[str, str]:
    """The run names of a family's four models: {"vanilla": ..., "st_low": ..., "st_middle": ..., "ffn": ...}.

    TSM's are `make demo`'s (tsm16, tsm4, tsm8, ffn), so its finished runs are reused.
    """
    low, middle, high = ARCH_EXPERIMENTS[family].frames
    return {"vanilla": f"{family}{high}", "st_low": f"{family}{low}", "st_middle": f"{family}{middle}",
            "ffn": "ffn" if family == MAKE_DEMO_FAMILY else f"{family}_ffn"}


def preset_flags(preset: dict[str, Any]) -> list[str]:
    """train.py flags for the settings where a family's preset differs from the demo preset (epochs aside)."""
    flags: list[str] = []
    for key in ARCH_SETTINGS:
        value = preset[key]
        if key == "epochs" or value == PRESETS["demo"].get(key):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            flags += [flag, str(value)]
    return flags


def arch_train_args(family: str) -> dict[str, list[str]]:
    """train.py arguments of a family's four models (mode, frames, the preset's flags), by kind."""
    experiment = ARCH_EXPERIMENTS[family]
    low, middle, high = (str(count) for count in experiment.frames)
    flags = preset_flags(experiment.preset)
    return {
        "ffn": ["--mode", "ffn", "--frames", low, middle, high, "--val-frames", low, middle, high, *flags],
        "vanilla": ["--mode", "vanilla", "--frames", high, *flags],
        "st_middle": ["--mode", "vanilla", "--frames", middle, *flags],
        "st_low": ["--mode", "vanilla", "--frames", low, *flags],
    }


def arch_eval_frames(family: str) -> list[int]:
    """Every frame count from 2 to the family's highest that its model accepts."""
    from model import build_model  # the demo's other steps run without building a model here

    experiment = ARCH_EXPERIMENTS[family]
    spec = build_model(experiment.arch, num_classes=2).input_spec
    return [frames for frames in range(LOWEST_EVAL_FRAMES, experiment.frames[-1] + 1) if spec.accepts_frames(frames)]


def family_loss(family: str) -> str:
    """The official loss in the family's frame counts."""
    low, middle, high = ARCH_EXPERIMENTS[family].frames
    return (f"official: CE on {high}F + KL({high}F -> {low}F) + KL({high}F -> {middle}F), lambda 1, "
            "temperature 1")


def pretrain_families(families: Sequence[str], args: argparse.Namespace, runs: Path,
                      timer: Timer) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Pretrain every family's backbone (cached ones are reused), two at a time; return {family: (path, record)}."""
    jobs, folders = [], {}
    for family in families:
        arch = ARCH_EXPERIMENTS[family].arch
        command, folder = pretrain_command(args, runs, arch)
        folders[family] = folder
        if (folder / BACKBONE_FILE).is_file() and (folder / RECORD_FILE).is_file():
            print(f"\n== pretraining {arch}: reusing {folder / BACKBONE_FILE}", flush=True)
            continue  # the folder is named by the settings' hash; the SHA-256 is checked below
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append(Training(f"pretrain {arch}", command, folder, PRETRAIN_LOG))
    run_trainings(jobs, args.jobs, timer, phase="pretraining")
    backbones = {}
    for family, folder in folders.items():
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        if record.get("sha256") != file_sha256(folder / BACKBONE_FILE):
            raise SystemExit(f"demo: {folder / BACKBONE_FILE} does not match its SHA-256 in {folder / RECORD_FILE}; "
                             "delete the folder and run again")
        backbones[family] = (folder / BACKBONE_FILE, record)
    return backbones


def train_families(families: Sequence[str], backbones: dict[str, tuple[Path, dict[str, Any]]], runs: Path,
                   shards: Path, num_classes: int, args: argparse.Namespace,
                   timer: Timer) -> tuple[dict[str, Path], dict[str, str]]:
    """Train every family's four models for every seed, two at a time, the longest kinds first; return
    {"name@seedS": checkpoint} and {name: command}."""
    checkpoints: dict[str, Path] = {}
    commands: dict[str, str] = {}
    planned: list[tuple[int, int, Training]] = []
    for seed in args.seeds:
        for family_index, family in enumerate(families):
            preset = ARCH_EXPERIMENTS[family].preset
            epochs = None if preset["epochs"] == PRESETS["demo"]["epochs"] else preset["epochs"]
            names, train_args = arch_model_names(family), arch_train_args(family)
            for kind in ARCH_KINDS:
                name = names[kind]
                output = runs / f"seed{seed}" / name
                training, command = plan_training(name, train_args[kind], shards, output, seed, num_classes, args,
                                                  timer, backbones[family][0], epochs, preset["val_every"])
                if training:
                    planned.append((ARCH_KINDS.index(kind), family_index, training))
                checkpoints[f"{name}@seed{seed}"] = output / "last.pt"
                commands[name] = shlex.join(command[1:])
    planned.sort(key=lambda item: item[:2])
    run_trainings([training for _, _, training in planned], args.jobs, timer)
    return checkpoints, commands


def evaluate_families(families: Sequence[str], checkpoints: dict[str, Path], shards: Path, runs: Path,
                      args: argparse.Namespace, timer: Timer) -> dict[str, dict[str, Any]]:
    """Evaluate each family's models at its frame counts (one evaluate.py per family, two at a time); return
    {family: evaluate.py's JSON}."""
    jobs, tags = [], {}
    folder = runs / "archs_eval"
    folder.mkdir(parents=True, exist_ok=True)
    for family in families:
        names = set(arch_model_names(family).values())
        chosen = {key: path for key, path in checkpoints.items() if key.split("@")[0] in names}
        tags[family] = f"archs_{family}_per_seed"
        command = [sys.executable, "evaluate.py", "--checkpoints", *[f"{key}={path}" for key, path in chosen.items()],
                   "--frames", *map(str, arch_eval_frames(family)), "--shards", str(shards), "--output", str(folder),
                   "--tag", tags[family], "--workers", str(LOADER_WORKERS), "--batch-size", str(EVAL_BATCH),
                   "--threads", str(args.threads), "--no-latency"]
        jobs.append(Training(f"evaluate {family}", command, folder, f"{family}_{EVAL_LOG}"))
    run_trainings(jobs, args.jobs, timer, phase="evaluation")
    return {family: json.loads((folder / f"{tag}.json").read_text(encoding="utf-8")) for family, tag in tags.items()}


def kind_values(models: dict[str, Any], name: str, eval_frames: Sequence[str]) -> dict[str, Any]:
    """{kind: {T: mean}} plus the min, max and per-seed values of one model (several seeds)."""
    entry = models[name]
    return {"mean": {frames: entry["top1"][frames] for frames in eval_frames},
            "min": {frames: entry["top1_min"][frames] for frames in eval_frames},
            "max": {frames: entry["top1_max"][frames] for frames in eval_frames},
            "by_seed": {frames: entry["top1_by_seed"][frames] for frames in eval_frames}}


def family_entry(family: str, per_seed: dict[str, Any], seeds: Sequence[int], backbone: tuple[Path, dict[str, Any]],
                 commands: dict[str, str]) -> dict[str, Any]:
    """archs.json's entry of one family: top-1 of the three kinds, GFLOPs, margins and settings."""
    experiment = ARCH_EXPERIMENTS[family]
    names = arch_model_names(family)
    models = aggregate(per_seed, list(names.values()), seeds)
    eval_frames = sorted(models[names["vanilla"]]["top1"], key=int)
    low, middle, high = (str(count) for count in experiment.frames)
    vanilla, ffn = kind_values(models, names["vanilla"], eval_frames), kind_values(models, names["ffn"], eval_frames)
    st_sources = {low: names["st_low"], middle: names["st_middle"], high: names["vanilla"]}
    st = {frames: kind_values(models, name, [frames]) for frames, name in st_sources.items()}
    entry: dict[str, Any] = {
        "arch": experiment.arch, "frames": list(experiment.frames),
        "vanilla": vanilla["mean"], "ffn": ffn["mean"],
        "st": {frames: st[frames]["mean"][frames] for frames in st_sources},
        "gflops": models[names["vanilla"]].get("gflops"),
    }
    if len(seeds) > 1:
        for kind, values in (("vanilla", vanilla), ("ffn", ffn)):
            entry[f"{kind}_min"], entry[f"{kind}_max"] = values["min"], values["max"]
        entry["st_min"] = {frames: st[frames]["min"][frames] for frames in st_sources}
        entry["st_max"] = {frames: st[frames]["max"][frames] for frames in st_sources}
    entry["by_seed"] = {"vanilla": vanilla["by_seed"], "ffn": ffn["by_seed"],
                        "st": {frames: st[frames]["by_seed"][frames] for frames in st_sources}}
    entry["st_models"] = {count: models[name]["top1"] for count, name in st_sources.items()}
    entry["margins"] = arch_margins(entry)
    entry["untrained_frames"] = untrained_comparison(entry, models, names)
    entry["settings"] = {
        "models": names, "preset": experiment.preset, "loss": family_loss(family),
        "commands": {name: commands[name] for name in names.values()},
        "eval_frames": [int(frames) for frames in eval_frames],
        "ffn_gflops": models[names["ffn"]].get("gflops"),
        "pretraining": {"checkpoint": str(backbone[0]), "sha256": backbone[1]["sha256"],
                        "settings": backbone[1]["settings"], "val_top1": backbone[1]["val_top1"],
                        "train_s": backbone[1]["train_s"]},
    }
    return entry


def arch_margins(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance margins of one family (on the means over seeds)."""
    low, middle, high = (str(count) for count in entry["frames"])
    vanilla, ffn, st = entry["vanilla"], entry["ffn"], entry["st"]
    checks = [
        (f"vanilla@{low}F <= vanilla@{high}F - 25", vanilla[low], vanilla[high] - 25,
         vanilla[low] <= vanilla[high] - 25),
        (f"ffn@{low}F >= vanilla@{low}F + 30", ffn[low], vanilla[low] + 30, ffn[low] >= vanilla[low] + 30),
        (f"ffn@{high}F >= vanilla@{high}F - 3", ffn[high], vanilla[high] - 3, ffn[high] >= vanilla[high] - 3),
        (f"ffn@{low}F >= st@{low}F - 3", ffn[low], st[low] - 3, ffn[low] >= st[low] - 3),
        (f"ffn@{middle}F >= st@{middle}F - 3", ffn[middle], st[middle] - 3, ffn[middle] >= st[middle] - 3),
    ]
    return [{"rule": rule, "value": round(value, 2), "bound": round(bound, 2), "pass": bool(ok)}
            for rule, value, bound, ok in checks]


def untrained_comparison(entry: dict[str, Any], models: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """At every evaluated count nobody trained on: FFN against the best separated model there (reported)."""
    trained = {str(count) for count in entry["frames"]}
    separated = {names["vanilla"]: models[names["vanilla"]], names["st_middle"]: models[names["st_middle"]],
                 names["st_low"]: models[names["st_low"]]}
    comparison = {}
    for frames in entry["ffn"]:
        if frames in trained:
            continue
        best = max(separated, key=lambda name: separated[name]["top1"][frames])
        best_value = separated[best]["top1"][frames]
        comparison[frames] = {"ffn": entry["ffn"][frames], "best_st": best_value, "best_st_model": best,
                            "difference": round(entry["ffn"][frames] - best_value, 2)}
    return comparison


def format_arch_table(report: dict[str, Any]) -> str:
    """The official README's layout: per family the vanilla, ST and FFN rows at v_L, v_M and v_H."""
    seeds = report["settings"]["seeds"]
    rows = [["model", "frames", "v_L", "v_M", "v_H"]]
    for family, entry in report["archs"].items():
        counts = [str(count) for count in entry["frames"]]
        label = ARCH_LABELS[family]
        for kind, suffix in (("vanilla", ""), ("st", "-ST"), ("ffn", "-FFN")):
            cells = []
            for frames in counts:
                cell = f"{entry[kind][frames]:.1f}"
                if len(seeds) > 1:
                    cell += f" [{entry[f'{kind}_min'][frames]:.1f}-{entry[f'{kind}_max'][frames]:.1f}]"
                cells.append(cell)
            rows.append([label + suffix, "/".join(counts), *cells])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


ARCH_LABELS = {"tsm": "TSM", "tea": "TEA", "slowfast": "SlowFast", "uniformer": "UniFormer"}


def write_archs_plot(report: dict[str, Any], path: Path) -> Any:
    """archs.png: one panel per family, top-1 against frames of the vanilla, separated (ST) and FFN models.

    The ST line joins each separated model's top-1 at its own frame count (ST at v_H is the vanilla model); each
    separated model's whole curve is drawn thin and dotted. Bands: min-max over seeds.

    Returns
    -------
    matplotlib.figure.Figure
        The (closed) figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(report["archs"])
    columns = min(2, len(families))
    rows = -(-len(families) // columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(6.0 * columns, 4.2 * rows), squeeze=False)
    for index, family in enumerate(families):
        draw_family_panel(axes_grid[index // columns][index % columns], family, report["archs"][family])
    for index in range(len(families), rows * columns):
        axes_grid[index // columns][index % columns].set_visible(False)
    seeds = report["settings"]["seeds"]
    figure.suptitle(f"Synthetic data, {report['settings']['n_validation']} validation videos, "
                    f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
                    f"{' (mean, band: min-max)' if len(seeds) > 1 else ''}", fontsize=10)
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
    return figure


def draw_family_panel(axes: Any, family: str, entry: dict[str, Any]) -> None:
    """One family's panel of archs.png."""
    eval_frames = sorted(entry["vanilla"], key=int)
    positions = [int(frames) for frames in eval_frames]
    low, middle, high = entry["frames"]
    label = ARCH_LABELS[family]
    for kind, text, style in (("vanilla", f"{label} (trained at {high})", "-"),
                              ("ffn", f"{label}-FFN ({low}/{middle}/{high}, official loss)", "-")):
        line, = axes.plot(positions, [entry[kind][frames] for frames in eval_frames], style, marker="o", markersize=3,
                          label=text)
        if f"{kind}_min" in entry:
            lows = [entry[f"{kind}_min"][frames] for frames in eval_frames]
            highs = [entry[f"{kind}_max"][frames] for frames in eval_frames]
            axes.fill_between(positions, lows, highs, color=line.get_color(), alpha=0.15)
    st_counts = [str(count) for count in entry["frames"]]
    st_line, = axes.plot([int(frames) for frames in st_counts], [entry["st"][frames] for frames in st_counts], "s--",
                         label=f"{label}-ST (one model per count)")
    for count in st_counts[:-1]:
        curve = entry["st_models"][count]
        axes.plot(positions, [curve[frames] for frames in eval_frames], ":", color=st_line.get_color(), linewidth=0.9)
    axes.set_title(f"{label} ({entry['arch']}; dotted: each separated model at every count)", fontsize=9)
    axes.set_xlabel("frames at evaluation" + (" (Fast pathway)" if family == "slowfast" else ""))
    axes.set_ylabel("top-1 (%)")
    axes.set_xticks(positions)
    axes.tick_params(axis="x", labelsize=7)
    axes.set_ylim(0, 102)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")


def print_arch_report(report: dict[str, Any]) -> None:
    """Print the README-style table, each family's every count, margins and the untrained-count comparison."""
    seeds = report["settings"]["seeds"]
    print("\ntop-1 (%) on the validation split at v_L / v_M / v_H"
          + (" (mean [min-max] over seeds)" if len(seeds) > 1 else ""))
    print(format_arch_table(report))
    for family, entry in report["archs"].items():
        eval_frames = sorted(entry["vanilla"], key=int)
        print(f"\n{ARCH_LABELS[family]} ({entry['arch']}) at every count")
        table = {"vanilla": {"top1": entry["vanilla"]}, "ffn": {"top1": entry["ffn"]},
                 **{f"st{count}": {"top1": curve} for count, curve in entry["st_models"].items()
                    if int(count) != entry["frames"][-1]}}
        print(format_table(table, [int(frames) for frames in eval_frames], second=None))
        print("margins")
        print_margins(entry["margins"])
        differences = ", ".join(f"{frames}F {item['difference']:+.1f}"
                                for frames, item in entry["untrained_frames"].items())
        print(f"  ffn - best separated model at untrained counts (reported): {differences}")


def print_arch_times(timer: Timer, setup_s: float | None, total_s: float, idle: dict[str, Any]) -> None:
    """Print the time breakdown: wall and CPU seconds of this invocation, and the idle estimate of the whole run."""
    print("\ntime breakdown (wall seconds; CPU seconds of each step's processes)")
    if setup_s is not None:
        print(f"  {'set-up (make, venv)':<36} {setup_s:8.1f}")
    for name, seconds in timer.seconds.items():
        cpu = timer.cpu_seconds.get(name)
        print(f"  {name:<36} {seconds:8.1f}" + ("" if cpu is None else f"  cpu {cpu:8.1f}"))
    print(f"  {'total':<36} {total_s:8.1f}  ({total_s / 60:.1f} min)")
    print(f"\nidle estimate after make demo on {idle['jobs']} cores (each step's CPU seconds, reused runs included, "
          "side-by-side steps replayed in the runner's order)")
    for phase in ("pretraining", "training", "evaluation"):
        print(f"  {phase:<36} {idle[phase + '_s']:8.1f}  (cpu {idle[phase + '_cpu_s']:.1f})")
    if idle["missing"]:
        print(f"  no CPU record (left out): {', '.join(idle['missing'])}")
    print(f"  {'total':<36} {idle['total_s']:8.1f}  ({idle['total_s'] / 60:.1f} min)")


def replayed_seconds(durations: Sequence[float], jobs: int) -> float:
    """The wall time of jobs run in the given order, `jobs` at a time, each taking its duration."""
    slots = [0.0] * max(1, jobs)
    for duration in durations:
        slots[slots.index(min(slots))] += duration
    return max(slots, default=0.0)


def idle_estimate(families: Sequence[str], seeds: Sequence[int], backbones: dict[str, tuple[Path, dict[str, Any]]],
                  checkpoints: dict[str, Path], timer: Timer, jobs: int, setup_s: float | None) -> dict[str, Any]:
    """What `make demo-archs` takes on idle cores after `make demo`, from CPU seconds.

    Each job is single-threaded, so on a free core its wall time is its CPU time. Every side-by-side step
    (pretraining, training, evaluation) is replayed `jobs` at a time in the runner's order with its jobs' CPU
    seconds, including jobs this invocation reused (from each backbone's pretrain.json and each run's CPU record).
    What `make demo` made (the TSM backbone and runs, the data and the shards) is left out: demo-archs reuses it.
    """
    new_families = [family for family in families if family != MAKE_DEMO_FAMILY]
    missing: list[str] = []
    pretraining = []
    for family in new_families:
        cpu = backbones[family][1].get("cpu_s")
        pretraining.append(cpu or 0.0)
        missing += [] if cpu is not None else [f"pretrain {ARCH_EXPERIMENTS[family].arch}"]
    cpu_by_run = run_cpu_seconds(checkpoints)
    ordered = sorted(((ARCH_KINDS.index(kind), index, f"{name}@seed{seed}") for seed in seeds
                      for index, family in enumerate(new_families)
                      for kind, name in arch_model_names(family).items()), key=lambda item: item[:2])
    training = []
    for _, _, key in ordered:
        training.append(cpu_by_run.get(key) or 0.0)
        missing += [] if cpu_by_run.get(key) is not None else [key]
    evaluation = [timer.cpu_seconds.get(f"evaluate {family}", 0.0) for family in families]
    phases = {"pretraining": pretraining, "training": training, "evaluation": evaluation}
    estimate: dict[str, Any] = {"jobs": jobs, "missing": missing, "setup_s": setup_s}
    for phase, durations in phases.items():
        estimate[f"{phase}_s"] = round(replayed_seconds(durations, jobs), 1)
        estimate[f"{phase}_cpu_s"] = round(sum(durations), 1)
    estimate["total_s"] = round(sum(estimate[f"{phase}_s"] for phase in phases) + (setup_s or 0.0), 1)
    return estimate


def run_archs(args: argparse.Namespace) -> dict[str, Any]:
    """`--archs`: pretrain, train, evaluate and tabulate every chosen family; return archs.json's content."""
    begin = time.time()
    setup_s = begin - args.started_at if args.started_at else None
    families = list(args.archs) or list(FAMILIES)
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    data_root, shards, timer = runs / "data", runs / "shards", Timer()
    summary = generate_data(args, data_root, timer)
    build_shards(args, data_root, shards, timer)
    num_classes = int(summary["num_classes"])
    backbones = pretrain_families(families, args, runs, timer)
    checkpoints, commands = train_families(families, backbones, runs, shards, num_classes, args, timer)
    per_family = evaluate_families(families, checkpoints, shards, runs, args, timer)
    report: dict[str, Any] = {"archs": {family: family_entry(family, per_family[family], args.seeds,
                                                             backbones[family], commands)
                                        for family in families}}
    total_s = time.time() - begin + (setup_s or 0.0)
    idle = idle_estimate(families, args.seeds, backbones, checkpoints, timer, DEFAULT_JOBS, setup_s)
    first = next(iter(per_family.values()))
    report["settings"] = {
        "seeds": list(args.seeds), "data_seed": DATA_SEED, "classes": summary.get("templates"),
        "num_classes": summary.get("num_classes"), "videos_per_class": summary.get("videos_per_class"),
        "clip_frames": CLIP_FRAMES, "frame_size": FRAME_SIZE, "split": "validation",
        "n_validation": next(iter(first["models"].values()))["n"],
        "protocol": "1 clip x full 32x32 frame (test resize 32, centre crop 32)",
        "st": "st[T]: top-1 at T of the model trained at T alone (at the highest count: the vanilla model)",
        "epochs_override": args.epochs, "jobs": args.jobs, "threads": args.threads,
        "timings_s": {"setup": None if setup_s is None else round(setup_s, 1),
                      **{name: round(value, 1) for name, value in timer.seconds.items()},
                      "total": round(total_s, 1)},
        "cpu_seconds": {name: round(value, 1) for name, value in timer.cpu_seconds.items()},
        "idle_estimate": idle,
        "run_seconds": run_seconds(run_histories(checkpoints)),
        "run_cpu_seconds": run_cpu_seconds(checkpoints),
        "machine": machine_record(),
    }
    write_json_atomic(runs / f"{ARCHS_REPORT}.json", report)
    write_archs_plot(report, runs / f"{ARCHS_REPORT}.png")
    print_arch_report(report)
    print_arch_times(timer, setup_s, total_s, idle)
    print(f"\nwrote {runs / f'{ARCHS_REPORT}.json'} and {runs / f'{ARCHS_REPORT}.png'}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.archs is not None:
        if args.study or args.start != PRETRAINED or args.fresh:
            raise SystemExit("demo: --archs runs on its own (no --study, --start random or --fresh)")
        run_archs(args)
        return 0
    run_demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
