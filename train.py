"""Train a TSM (vanilla, or one model per frame count: "separated training") or a TSM-FFN on packed JPEG shards.

Usage (one process, any device)::

    python train.py --mode tsm --frames 16 --shards database/shards --output runs/tsm16
    python train.py --mode ffn --frames 4 8 16 --shards database/shards --output runs/ffn

Several processes (DDP; NCCL on CUDA, gloo on CPU)::

    torchrun --nproc_per_node=8 train.py --mode ffn --frames 4 8 16 --shards ... --output ...

``--lr`` is the learning rate for a total batch of 32 videos; it is scaled linearly with the actual total batch
(batch per process x processes) and the effective rate is printed. ``--preset official`` is the official FFN
recipe, ``--preset demo`` the synthetic-data recipe of ``make demo``. Every epoch writes ``last.pt`` (and
``best.pt`` when the validation top-1 at the highest trained frame count improves) atomically; ``--resume``
continues exactly where ``last.pt`` stopped. Every checkpoint also records what predict.py needs (arch, trained
frames, class names from the shards' manifest, transform sizes: engine.inference.inference_record).

The pieces shared with evaluate.py, pretrain.py, the demo and the benchmarks live in engine/ (distributed set-up,
precision, RNG state, checkpoints, schedule, loaders, evaluation); this script keeps the command line, the
training loop and its logs. ``frames`` are the trained frame counts (one FFN branch each).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from common.atomic import atomic_file, write_json_atomic
from data_pipeline import reduce_counts
from engine.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint, same_model, save_atomic
from engine.config import BASE_DEFAULTS, PRESETS
from engine.data import batch_on_device, make_loader, read_num_classes, read_shard_facts, timed_batches
from engine.distributed import close_distributed, init_distributed, is_distributed
from engine.evaluation import evaluate_networks
from engine.inference import INFERENCE_KEY, inference_record
from engine.precision import (
    CHANNELS_LAST_CHOICES,
    PRECISIONS,
    autocast_context,
    resolve_channels_last,
    resolve_precision,
)
from engine.rng import gather_rng_states, restore_rng_state, seed_everything
from engine.schedule import REFERENCE_TOTAL_BATCH, LearningRateShape, scaled_learning_rate
from model import build_model, build_optimizer, distillation_loss
from model.tsm_resnet import SHIFT_MODES

LOG_CSV = "log.csv"
SETTINGS_JSON = "settings.json"
TENSORBOARD_EVERY = 10
LOG_COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "val_frames", "val_top1", "val_top5", "val_n",
    "clips_per_s", "data_wait", "epoch_s",
)


# Command line


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (preset-controlled flags default to None and are filled by resolve_args)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mode", choices=("tsm", "ffn"), required=True, help="tsm: one frame count; ffn: several")
    parser.add_argument("--frames", type=int, nargs="+", required=True, help="frame count(s), e.g. 16 or 4 8 16")
    parser.add_argument("--shards", type=Path, required=True, help="folder with <split>.manifest.json and tars")
    parser.add_argument("--output", type=Path, required=True, help="run folder (checkpoints, log.csv)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a documented recipe; flags win")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="validation")
    parser.add_argument("--num-classes", type=int, default=None, help="default: from the shards' labels")
    group = parser.add_argument_group("model")
    group.add_argument("--arch", default=None, help="resnet50 (default), resnet18, ..., tiny")
    group.add_argument("--pretrained", default=None,
                       help="auto (imagenet for resnet*), imagenet, none, or the path of a torchvision-style ResNet "
                            "state dict (e.g. pretrain.py's backbone.pt)")
    group.add_argument("--shift-mode", choices=SHIFT_MODES, default=None)
    group.add_argument("--dropout", type=float, default=None)
    group.add_argument("--private-norms", action=argparse.BooleanOptionalAction, default=True,
                       help="FFN: a BatchNorm set per frame count (--no-private-norms: one shared set, an ablation)")
    group.add_argument("--weight-alteration", action=argparse.BooleanOptionalAction, default=True,
                       help="FFN: per-frame-count Weight Alteration convs (--no-weight-alteration: an ablation)")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, default=None)
    group.add_argument("--batch-size", type=int, default=None, help="videos per process (default 8)")
    group.add_argument("--lr", type=float, default=None, help="rate for a total batch of 32 (scaled linearly)")
    group.add_argument("--optimizer", choices=("sgd", "adamw"), default=None)
    group.add_argument("--momentum", type=float, default=None)
    group.add_argument("--weight-decay", type=float, default=None)
    group.add_argument("--schedule", choices=("cosine", "step"), default=None)
    group.add_argument("--lr-steps", type=int, nargs="+", default=None, help="epochs of x0.1 (step schedule)")
    group.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up length")
    group.add_argument("--official-groups", action=argparse.BooleanOptionalAction, default=None,
                       help="classifier lr x5/x10 and no weight decay on BN/bias (official recipe)")
    group.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (default: none)")
    group.add_argument("--lam", type=float, default=1.0, help="FFN: weight of the KL terms (0: CE on the highest "
                                                               "frame count only, an ablation)")
    group.add_argument("--ce-all-frames", action="store_true",
                       help="FFN: cross-entropy at every frame count (not the official loss: CE at the highest only)")
    group = parser.add_argument_group("data")
    group.add_argument("--workers", type=int, default=4, help="loader worker processes per process")
    group.add_argument("--decode", default="auto", help="auto, dali, torchvision or cpu")
    group.add_argument("--sampling", choices=("independent", "nested"), default="independent")
    group.add_argument("--tar-reader", choices=("lean", "webdataset"), default="lean",
                       help="shard tar reader (webdataset: WebDataset's own, slower; a fallback)")
    group.add_argument("--short-video", choices=("official", "spread"), default="official")
    group.add_argument("--crop-size", type=int, default=None)
    group.add_argument("--test-resize", type=int, default=None, help="validation short side (default: loader's)")
    group.add_argument("--multi-scale", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--val-batch-size", type=int, default=None, help="default: --batch-size")
    group.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and always at the end)")
    group.add_argument("--val-frames", type=int, nargs="+", default=None,
                       help="frame counts validated (default: the highest trained; best.pt follows that one)")
    group = parser.add_argument_group("run")
    group.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: bf16 autocast on CUDA, fp32 on CPU/MPS; fp16 uses a GradScaler")
    group.add_argument("--channels-last", choices=CHANNELS_LAST_CHOICES, default="auto", help="auto: on with CUDA")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    group.add_argument("--resume", nargs="?", const="auto", default=None,
                       help="continue from a checkpoint (no value: <output>/last.pt)")
    group.add_argument("--stop-after-epochs", type=int, default=None,
                       help="stop after this many epochs in this invocation (e.g. a job time limit); --resume goes on")
    group.add_argument("--max-steps-per-epoch", type=int, default=None, help="shorten epochs (smoke tests)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch)")
    return parser


def resolve_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line and fill unset options from the preset, then from BASE_DEFAULTS.

    Frame counts are sorted and deduplicated: ``args.frames`` are the trained counts (one per FFN branch).

    Raises
    ------
    SystemExit
        On an invalid combination (a clear one-line message).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = PRESETS.get(args.preset, {}) if args.preset else {}
    for key, value in BASE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, value))
    if args.val_batch_size is None:
        args.val_batch_size = args.batch_size
    args.frames = sorted(set(args.frames))
    if args.mode == "tsm" and len(args.frames) != 1:
        parser.error("--mode tsm takes one frame count (train one model per count for separated training)")
    if args.mode == "ffn" and len(args.frames) < 2:
        parser.error("--mode ffn needs at least two frame counts, e.g. --frames 4 8 16")
    if min(args.frames) < 1 or args.batch_size < 1 or args.epochs < 1:
        parser.error("--frames, --batch-size and --epochs must be positive")
    if args.lam < 0:
        parser.error("--lam must be zero or positive")
    if args.val_frames is not None and min(args.val_frames) < 1:
        parser.error("--val-frames must be positive frame counts")
    if args.pretrained == "auto":
        args.pretrained = "imagenet" if str(args.arch).startswith("resnet") else "none"
    return args


# Model and loss


def build_network(args: argparse.Namespace, num_classes: int, channels_last: bool) -> nn.Module:
    """Build the TSM (mode tsm) or TSM-FFN (mode ffn) of the arguments."""
    pretrained = None if args.pretrained in (None, "none") else args.pretrained
    return build_model(
        arch=args.arch,
        num_classes=num_classes,
        trained_frames=tuple(args.frames) if args.mode == "ffn" else None,
        pretrained=pretrained,
        shift_mode=args.shift_mode,
        dropout=args.dropout,
        channels_last=channels_last,
        private_norms=args.private_norms,
        weight_alteration=args.weight_alteration,
    )


def compute_loss(mode: str, logits_by_frames: dict[int, torch.Tensor], labels: torch.Tensor, lam: float,
                 ce_all_frames: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return (loss, parts): cross-entropy (tsm) or the FFN distillation loss (ffn), computed in float32.

    The parts are detached scalar tensors, read (a device sync) only when they are logged.
    """
    logits_by_frames = {count: logits.float() for count, logits in logits_by_frames.items()}
    if mode == "tsm":
        (logits,) = logits_by_frames.values()
        loss = F.cross_entropy(logits, labels)
        return loss, {"ce": loss.detach()}
    return distillation_loss(logits_by_frames, labels, lam=lam, ce_all_frames=ce_all_frames)


# The run: what one process builds


@dataclass
class TrainingRun:
    """What one training process builds (model, optimisation, loaders) and where it stands (history, best epoch).

    ``frames`` are the trained frame counts; validation runs at ``val_frames`` (the highest trained count plus any
    ``--val-frames``) and best.pt follows the highest trained count.
    """

    args: argparse.Namespace
    device: torch.device
    rank: int
    world_size: int
    precision: str
    channels_last: bool
    network: nn.Module
    model: nn.Module  # the network, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_loader: Any
    val_loader: Any
    steps_per_epoch: int
    lr: float
    start_epoch: int = 0
    global_step: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    writer: Any = None
    inference: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes files and prints)."""
        return self.rank == 0

    @property
    def frames(self) -> list[int]:
        """The trained frame counts."""
        return list(self.args.frames)

    @property
    def top_frames(self) -> int:
        """The highest trained frame count (train top-1 and best.pt follow it)."""
        return max(self.args.frames)

    @property
    def val_frames(self) -> list[int]:
        """The frame counts validated: the highest trained one and any --val-frames."""
        return validation_frames(self.args)

    @property
    def total_batch(self) -> int:
        """Videos per optimiser step over all processes."""
        return self.args.batch_size * self.world_size

    @property
    def output(self) -> Path:
        """The run folder."""
        return Path(self.args.output)

    @property
    def last_path(self) -> Path:
        """The checkpoint written after every epoch."""
        return self.output / LAST_CHECKPOINT


def validation_frames(args: argparse.Namespace) -> list[int]:
    """Return the frame counts validated: the highest trained one and any --val-frames, sorted."""
    return sorted(set(args.val_frames or []) | {max(args.frames)})


def build_run(args: argparse.Namespace) -> TrainingRun:
    """Set up the process and build network, loaders and optimisation, in a fixed order (seeding first)."""
    device, rank, world_size = init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, device)
    channels_last = resolve_channels_last(args.channels_last, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(args.seed + rank)
    num_classes = args.num_classes or read_num_classes(args.shards, args.train_split)
    network = build_network(args, num_classes, channels_last).to(device)
    val_frames = validation_frames(args)
    train_loader = make_loader(args, args.train_split, args.frames, True, args.batch_size, device, rank, world_size)
    val_loader = make_loader(args, args.val_split, val_frames, False, args.val_batch_size, device, rank, world_size)
    steps_per_epoch = len(train_loader)
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise SystemExit(f"{args.shards}: the {args.train_split} split gives no full batch of "
                         f"{args.batch_size} per process; lower --batch-size")
    lr = scaled_learning_rate(args.lr, args.batch_size * world_size)
    # Without --official-groups every parameter is decayed; with it, BatchNorm parameters and biases are not and
    # the classifier weight / bias get lr x5 / x10 (the official recipe).
    optimizer = build_optimizer(network, lr, args.momentum, args.weight_decay, args.official_groups,
                                optimizer=args.optimizer)
    shape = LearningRateShape(args.schedule, steps_per_epoch, args.epochs, args.warmup_epochs, args.lr_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model = network  # forward({T: frames}) runs forward_rates, so DDP can wrap the network itself
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    run = TrainingRun(args, device, rank, world_size, precision, channels_last, network, model, optimizer,
                      scheduler, scaler, train_loader, val_loader, steps_per_epoch, lr)
    run.inference = inference_record(network.config, args.mode, args.frames, args.crop_size, args.test_resize,
                                     read_shard_facts(args.shards, args.train_split))
    return run


def run_settings(run: TrainingRun) -> dict[str, Any]:
    """Return the run's settings (recorded in settings.json and in every checkpoint's metrics)."""
    recorded = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(run.args).items()}
    recorded.update(world_size=run.world_size, total_batch=run.total_batch, effective_lr=run.lr,
                    precision_used=run.precision, channels_last_used=run.channels_last,
                    device=str(run.device), steps_per_epoch=run.steps_per_epoch)
    return recorded


# Checkpoints


def resume(run: TrainingRun, path: Path) -> None:
    """Restore model, optimiser, schedule, scaler, history and this rank's RNG states from a checkpoint."""
    payload = load_checkpoint(path)
    config = dict(run.network.config)
    if not same_model(payload["config"], config):
        raise SystemExit(f"{path}: built for another model ({payload['config']}); use the same flags as the run")
    run.network.load_state_dict(payload["model"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    if payload["scaler"]:
        run.scaler.load_state_dict(payload["scaler"])
    metrics = payload["metrics"]
    run.start_epoch = int(payload["epoch"])
    run.history = list(metrics.get("history", []))
    run.best_top1 = float(metrics.get("best_top1", -1.0))
    run.best_epoch = int(metrics.get("best_epoch", 0))
    run.global_step = run.start_epoch * run.steps_per_epoch
    states = payload["rng"]
    restore_rng_state(states[run.rank] if run.rank < len(states) else states[0])
    if run.is_main:
        print(f"resumed from {path} after epoch {run.start_epoch}", flush=True)


def save_checkpoints(run: TrainingRun, epoch_count: int, improved: bool) -> None:
    """Write last.pt (and best.pt when improved) atomically; every rank joins the RNG gather."""
    rng_states = gather_rng_states()
    if not run.is_main:
        return
    payload = {
        "model": run.network.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "epoch": epoch_count,
        "rng": rng_states,
        "config": dict(run.network.config),
        "metrics": {
            "history": run.history,
            "last": run.history[-1] if run.history else {},
            "best_top1": run.best_top1,
            "best_epoch": run.best_epoch,
            "val_frames": run.top_frames,
            "settings": run_settings(run),
        },
        INFERENCE_KEY: run.inference,
    }
    save_atomic(payload, run.last_path)
    if improved:
        save_atomic(payload, run.output / BEST_CHECKPOINT)


# Training and validation


def train_one_epoch(run: TrainingRun, epoch: int) -> dict[str, float]:
    """Train one epoch; return loss, top-1 (highest trained frame count), clips/s and the data-wait fraction."""
    from tqdm import tqdm

    run.model.train()
    if hasattr(run.train_loader, "set_epoch"):
        run.train_loader.set_epoch(epoch)
    show_bar = run.is_main and not run.args.no_progress
    bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{run.args.epochs}", disable=not show_bar,
               dynamic_ncols=True, leave=False, file=sys.stdout)
    sums = torch.zeros(3, dtype=torch.float64)  # loss x videos, top-1 correct, videos
    wait_total, start = 0.0, time.perf_counter()
    batches = itertools.islice(timed_batches(run.train_loader), run.steps_per_epoch)
    for step, (batch, wait) in enumerate(batches):
        loss_value, correct, videos = train_step(run, batch, epoch, step)
        wait_total += wait
        sums += torch.tensor([loss_value * videos, correct, videos], dtype=torch.float64)
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{100 * sums[1] / sums[2]:.1f}",
                        clips_s=f"{sums[2] * run.world_size / elapsed:.1f}", wait=f"{wait_total / elapsed:.2f}")
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    sums = torch.tensor(reduce_counts(sums, run.device), dtype=torch.float64)
    return {
        "train_loss": float(sums[0] / max(sums[2], 1)),
        "train_top1": float(100 * sums[1] / max(sums[2], 1)),
        "clips_per_s": float(sums[2] / elapsed),
        "data_wait": wait_total / elapsed,
        "epoch_s": elapsed,
    }


def train_step(run: TrainingRun, batch: dict[str, Any], epoch: int, step: int) -> tuple[float, int, int]:
    """One optimiser step; return (mean loss over all ranks, top-1 correct here, videos here)."""
    args = run.args
    frames_by_count, labels = batch_on_device(batch, run.frames, run.device)
    with autocast_context(run.precision, run.device):
        logits_by_frames = run.model(frames_by_count)
    loss, parts = compute_loss(args.mode, logits_by_frames, labels, args.lam, args.ce_all_frames)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if args.clip_grad:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.network.parameters(), args.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.global_step += 1
    loss_mean = loss.detach().float().reshape(1)
    if is_distributed():
        dist.all_reduce(loss_mean)
        loss_mean /= run.world_size
    loss_value = float(loss_mean)
    check_finite(loss_value, epoch, step, run.global_step, run.last_path)
    top_logits = logits_by_frames[run.top_frames].detach().float()
    correct = int(top_logits.argmax(dim=1).eq(labels).sum())
    if run.writer is not None and run.global_step % TENSORBOARD_EVERY == 0:
        run.writer.add_scalar("train/loss", loss_value, run.global_step)
        for name, value in parts.items():
            run.writer.add_scalar(f"train/{name}", float(value), run.global_step)
        run.writer.add_scalar("train/lr", run.scheduler.get_last_lr()[0], run.global_step)
    return loss_value, correct, int(labels.shape[0])


def validate(run: TrainingRun) -> dict[str, Any]:
    """Top-1 / top-5 on the validation split at the highest trained frame count (and at --val-frames)."""
    results = evaluate_networks({"model": run.network}, run.val_loader, run.val_frames, run.device,
                                run.precision)["model"]
    result = results[run.top_frames]
    record: dict[str, Any] = {"val_frames": run.top_frames, "val_top1": result["top1"], "val_top5": result["top5"],
                              "val_n": result["n"]}
    if len(run.val_frames) > 1:
        record["val_top1_at"] = {str(count): results[count]["top1"] for count in run.val_frames}
    return record


def train(run: TrainingRun) -> dict[str, Any]:
    """Train from start_epoch to the last epoch (or --stop-after-epochs); return the last epoch's record."""
    args = run.args
    if run.is_main:
        run.output.mkdir(parents=True, exist_ok=True)
        run.writer = open_tensorboard(run.output)
        if run.network.backbone_load is not None:
            print(run.network.backbone_load.summary(), flush=True)
        write_json_atomic(run.output / SETTINGS_JSON, run_settings(run))
        print(f"{args.mode} frames={run.frames} arch={args.arch} device={run.device} x{run.world_size} "
              f"precision={run.precision} channels_last={run.channels_last} batch={args.batch_size}/process "
              f"(total {run.total_batch}) lr={args.lr} for batch {REFERENCE_TOTAL_BATCH} -> effective "
              f"lr={run.lr:.6g} ({args.optimizer}, {args.schedule}) steps/epoch={run.steps_per_epoch}",
              flush=True)
    last_epoch = args.epochs
    if args.stop_after_epochs is not None:
        last_epoch = min(args.epochs, run.start_epoch + args.stop_after_epochs)
    record: dict[str, Any] = run.history[-1] if run.history else {}
    for epoch in range(run.start_epoch, last_epoch):
        record = {"epoch": epoch + 1, "lr": run.scheduler.get_last_lr()[0]}
        record.update(train_one_epoch(run, epoch))
        if (epoch + 1) % max(args.val_every, 1) == 0 or epoch + 1 == args.epochs:
            record.update(validate(run))
        improved = "val_top1" in record and record["val_top1"] > run.best_top1
        if improved:
            run.best_top1, run.best_epoch = record["val_top1"], epoch + 1
        run.history.append(record)
        save_checkpoints(run, epoch + 1, improved)
        if run.is_main:
            report_epoch(run, record)
    if run.writer is not None:
        run.writer.close()
    return record


# Logs


def report_epoch(run: TrainingRun, record: dict[str, Any]) -> None:
    """Print one line, rewrite log.csv and add the epoch's scalars to TensorBoard."""
    validation = (f" val@{record['val_frames']}F top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f}"
                  if "val_top1" in record else "")
    if "val_top1_at" in record:
        validation += " (" + " ".join(f"{count}F {top1:.1f}" for count, top1 in record["val_top1_at"].items()) + ")"
    print(f"epoch {record['epoch']}/{run.args.epochs} loss {record['train_loss']:.4f} "
          f"train top1 {record['train_top1']:.2f}{validation} {record['clips_per_s']:.1f} clips/s "
          f"data wait {100 * record['data_wait']:.0f}% {record['epoch_s']:.1f} s", flush=True)
    write_log_csv(run.output / LOG_CSV, run.history)
    if run.writer is not None:
        for key in ("train_loss", "train_top1", "val_top1", "val_top5", "clips_per_s", "data_wait"):
            if key in record:
                run.writer.add_scalar(f"epoch/{key}", record[key], record["epoch"])


def write_log_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the per-epoch CSV log from the history (atomic; a resumed run keeps exactly its epochs)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({key: row.get(key, "") for key in LOG_COLUMNS})
    with atomic_file(path, "w") as handle:
        handle.write(buffer.getvalue())


def open_tensorboard(output: Path) -> Any:
    """Return a TensorBoard SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(output / "tensorboard"))


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def check_finite(loss_value: float, epoch: int, step: int, global_step: int, last_good: Path | None) -> None:
    """Raise NonFiniteLossError naming the step and the last good checkpoint if the loss is not finite."""
    if math.isfinite(loss_value):
        return
    where = str(last_good) if last_good is not None and last_good.exists() else "none yet (no epoch finished)"
    raise NonFiniteLossError(
        f"loss is {loss_value} at epoch {epoch + 1} step {step + 1} (global step {global_step}); "
        f"last good checkpoint: {where}; lower --lr or use --precision fp32/bf16, then --resume"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, build, optionally resume, train; return the exit status."""
    args = resolve_args(argv)
    run = build_run(args)
    try:
        if args.resume:
            resume(run, run.last_path if args.resume == "auto" else Path(args.resume))
        train(run)
    except NonFiniteLossError as error:
        print(f"train.py: stopped: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        close_distributed()
    if run.is_main:
        print(f"done: best val top-1 {run.best_top1:.2f} at epoch {run.best_epoch}; "
              f"checkpoints in {run.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
