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
from engine.backbone_cache import BACKBONE_FILE, RECORD_FILE, backbone_settings, cache_folder  # noqa: E402
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
    parser.add_argument("--models", nargs="+", default=None,
                        help="with --study: train only these of the study's models (default: all of them)")
    parser.add_argument("--study-only", action="store_true",
                        help="with --study: train and tabulate the study models alone (not the main models)")
    parser.add_argument("--study", choices=sorted(STUDIES), default=None,
                        help="train and tabulate a study instead of the main table (after the main models)")
    return parser


class Timer:
    """Named wall-clock durations, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, command: Sequence[str]) -> None:
        """Run a command (output streams through), record its wall time, stop the demo if it fails."""
        print(f"\n== {name}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(list(command), cwd=REPO_ROOT, check=False)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
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


def pretrain_backbone(args: argparse.Namespace, runs: Path, timer: Timer) -> tuple[Path, dict[str, Any]]:
    """Pretrain the 2D backbone on single images (cached by its settings); return its path and pretrain.json."""
    command = [sys.executable, "pretrain.py", "--output-root", str(runs / "pretrain"),
               "--threads", str(args.threads)]
    if args.pretrain_epochs:
        command += ["--epochs", str(args.pretrain_epochs)]
    overrides = {"epochs": args.pretrain_epochs} if args.pretrain_epochs else {}
    folder = cache_folder(runs / "pretrain", backbone_settings(overrides))
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
                  args: argparse.Namespace, backbone: Path | None, epochs: int | None = None) -> list[str]:
    """Return the train.py command of one demo model (the demo preset, validation after every epoch).

    ``epochs`` sets a study's schedule; ``--epochs`` on the demo's command line (smoke runs) overrides every model's.
    """
    command = [sys.executable, "train.py", *mode_args, "--preset", "demo", "--shards", str(shards), "--output",
               str(output), "--seed", str(seed), "--num-classes", str(num_classes), "--workers", str(LOADER_WORKERS),
               "--threads", str(args.threads), "--val-every", "1", "--no-progress",
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
    """One planned training: its table label, command (with --resume when it continues) and folder."""

    label: str
    command: list[str]
    output: Path


def plan_training(name: str, mode_args: list[str], shards: Path, output: Path, seed: int, num_classes: int,
                  args: argparse.Namespace, timer: Timer, backbone: Path | None,
                  epochs: int | None) -> tuple[Training | None, list[str]]:
    """Prepare one model's folder; return its training (None: an identical finished run is reused) and command."""
    command = train_command(mode_args, shards, output, seed, num_classes, args, backbone, epochs)
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


def run_trainings(trainings: list[Training], jobs: int, timer: Timer) -> None:
    """Run the trainings, ``jobs`` at a time; with more than one, each writes its output to ``<output>/train.log``.

    Each training is seeded and single-threaded, so its numbers do not depend on how many run side by side.
    """
    if jobs <= 1 or len(trainings) <= 1:
        for training in trainings:
            timer.run(training.label, training.command)
        return
    print(f"\n== training {len(trainings)} runs, {jobs} at a time (each one's output: <run>/{TRAIN_LOG})", flush=True)
    start = time.perf_counter()
    waiting, running = list(trainings), []
    while waiting or running:
        while waiting and len(running) < jobs:
            training = waiting.pop(0)
            log = (training.output / TRAIN_LOG).open("w", encoding="utf-8")
            process = subprocess.Popen(training.command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            running.append((training, process, log, time.perf_counter()))
            print(f"   started {training.label}: {' '.join(training.command)}", flush=True)
        time.sleep(POLL_S)
        for item in [item for item in running if item[1].poll() is not None]:
            running.remove(item)
            finish_training(*item, running, timer)
    timer.seconds[f"training ({len(trainings)} runs, {jobs} at a time)"] = time.perf_counter() - start


def finish_training(training: Training, process: subprocess.Popen, log: Any, started: float,
                    running: list[Any], timer: Timer) -> None:
    """Record a finished training's time and last line; stop every other one and the demo if it failed."""
    log.close()
    seconds = time.perf_counter() - started
    timer.seconds[training.label] = seconds
    lines = (training.output / TRAIN_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    if process.returncode == 0:
        print(f"   finished {training.label} in {seconds:.0f} s: {lines[-1] if lines else ''}", flush=True)
        return
    for _, other, other_log, _ in running:
        other.terminate()
        other.wait()
        other_log.close()
    print("\n".join(lines[-20:]))
    raise SystemExit(f"demo: step {training.label!r} failed (exit {process.returncode}); "
                     f"see {training.output / TRAIN_LOG}")


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    run_demo(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
