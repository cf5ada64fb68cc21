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
continues exactly where ``last.pt`` stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from data_pipeline import build_loader, reduce_counts
from data_pipeline.stream import ShardDataError
from model import build_model, build_optimizer, distillation_loss, get_device, load_checkpoint_file
from model.factory import DEFAULT_NUM_CLASSES as SSV2_NUM_CLASSES
from model.tsm_resnet import SHIFT_MODES
from preprocess.shard_format import atomic_file, write_json_atomic

REFERENCE_TOTAL_BATCH = 32
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "metrics")
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
LOG_CSV = "log.csv"
SETTINGS_JSON = "settings.json"
TOP_K = 5
LOG_COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "val_frames", "val_top1", "val_top5", "val_n",
    "clips_per_s", "data_wait", "epoch_s",
)

# Values every run gets unless a preset or a flag says otherwise (the user's plan for SSv2).
BASE_DEFAULTS: dict[str, Any] = {
    "arch": "resnet50",
    "pretrained": "auto",
    "shift_mode": "per-video",
    "dropout": 0.5,
    "epochs": 50,
    "batch_size": 8,
    "lr": 0.01,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "lr_steps": [20, 40],
    "warmup_epochs": 0.0,
    "official_groups": False,
    "clip_grad": None,
    "crop_size": 224,
    "test_resize": None,
    "multi_scale": True,
}

# Documented recipes. "official": the official FFN SSv2 run (2 GPUs x 16 videos, lr 0.01 at total batch 32,
# step x0.1 at epochs 20 and 40, classifier lr x5 / x10, no weight decay on BN and biases, no gradient clipping
# under AMP). "demo": the synthetic-data recipe of `make demo` (tiny backbone, 32 px native frames, AdamW).
PRESETS: dict[str, dict[str, Any]] = {
    "official": {
        "batch_size": 16,
        "schedule": "step",
        "lr_steps": [20, 40],
        "official_groups": True,
        "clip_grad": None,
    },
    "demo": {
        "arch": "tiny",
        "pretrained": "none",
        "dropout": 0.0,
        "epochs": 20,
        "batch_size": 32,
        "lr": 3e-3,
        "optimizer": "adamw",
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
        "crop_size": 32,
        "test_resize": 32,
        "multi_scale": False,
    },
}


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


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
    group.add_argument("--private-bn", action=argparse.BooleanOptionalAction, default=True,
                       help="FFN: a BatchNorm set per frame count (--no-private-bn: one shared set, an ablation)")
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
    group.add_argument("--ce-all-rates", action="store_true",
                       help="FFN: cross-entropy on every rate (not the official loss, which has CE on the highest)")
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
    group.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                       help="auto: bf16 autocast on CUDA, fp32 on CPU/MPS; fp16 uses a GradScaler")
    group.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto", help="auto: on with CUDA")
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


# ----------------------------------------------------------------------------------------------------------------
# Distributed set-up, device, precision
# ----------------------------------------------------------------------------------------------------------------


def init_distributed(device_preference: str | None) -> tuple[torch.device, int, int]:
    """Start the process group when launched by torchrun; return (device, rank, world size).

    NCCL on CUDA, gloo otherwise. Each CUDA process uses the GPU of its LOCAL_RANK.
    """
    device = get_device(device_preference)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return device, 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return device, dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return the precision actually used: auto means bf16 on CUDA and fp32 elsewhere.

    Raises
    ------
    SystemExit
        If fp16 or bf16 is asked for off CUDA.
    """
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision in ("fp16", "bf16") and device.type != "cuda":
        raise SystemExit(f"--precision {precision} needs CUDA (device is {device}); use --precision fp32")
    return precision


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Return the autocast context for the precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_channels_last(choice: str, device: torch.device) -> bool:
    """Return whether to use channels_last memory format (auto: on CUDA only)."""
    return device.type == "cuda" if choice == "auto" else choice == "on"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Return this process's RNG states (Python, NumPy, torch CPU and, when present, CUDA)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by capture_rng_state."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Return the RNG state of every rank, indexed by rank (only rank 0's list is complete)."""
    state = capture_rng_state()
    if not is_distributed():
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def read_num_classes(shards: Path, split: str) -> int:
    """Return the class count recorded in a split's manifest settings, else SSv2's 174 (with a notice).

    Raises
    ------
    SystemExit
        If the manifest is missing or unreadable (the message names the file and the fix).
    """
    from preprocess.shard_format import ManifestError, manifest_path, read_manifest

    path = manifest_path(shards, split)
    try:
        manifest = read_manifest(path)
    except ManifestError as error:
        raise SystemExit(str(error)) from error
    settings = manifest.get("settings", {})
    for key in ("num_classes", "classes", "labels"):
        value = settings.get(key, manifest.get(key))
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (list, dict)) and value:
            return len(value)
    print(f"{path}: records no class count; using SSv2's {SSV2_NUM_CLASSES} (pass --num-classes otherwise)",
          flush=True)
    return SSV2_NUM_CLASSES


def make_loader(args: argparse.Namespace, split: str, rates: Sequence[int], train: bool, batch_size: int,
                device: torch.device, rank: int, world_size: int, **extra: Any) -> Any:
    """Build the data_pipeline loader for a split (training: augmentation and shuffling; else: test transform).

    `extra` goes to build_loader as well (evaluate.py: test_crops, test_clips).

    Raises
    ------
    SystemExit
        With one line naming the manifest when the split cannot be read or holds no video.
    """
    options: dict[str, Any] = {
        "shards": args.shards, "split": split, "rates": tuple(rates), "batch_size": batch_size, "train": train,
        "decode": args.decode, "device": device, "num_workers": args.workers, "seed": args.seed,
        "sampling": args.sampling, "short_video": args.short_video, "crop_size": args.crop_size,
        "multi_scale": args.multi_scale and train, "flip": False, "tar_reader": args.tar_reader, **extra,
    }
    if args.test_resize is not None:
        options["test_resize"] = args.test_resize
    if world_size > 1:
        options.update(rank=rank, world_size=world_size)
    try:
        return build_loader(**options)
    except ShardDataError as error:
        raise SystemExit(str(error)) from error


def timed_batches(loader: Any) -> Iterator[tuple[Any, float]]:
    """Yield (batch, seconds spent waiting for it)."""
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start


def frames_to_device(batch: dict[str, Any], rates: Sequence[int], device: torch.device) -> dict[int, torch.Tensor]:
    """Return {T: frames on the device} for the requested rates."""
    frames = batch["frames"]
    return {rate: frames[rate].to(device, non_blocking=True) for rate in rates}


# ----------------------------------------------------------------------------------------------------------------
# Model, loss, optimiser, schedule
# ----------------------------------------------------------------------------------------------------------------


def build_network(args: argparse.Namespace, num_classes: int, channels_last: bool) -> nn.Module:
    """Build the TSM (mode tsm) or TSM-FFN (mode ffn) of the arguments."""
    pretrained = None if args.pretrained in (None, "none") else args.pretrained
    return build_model(
        arch=args.arch,
        num_classes=num_classes,
        ffn_frames=tuple(args.frames) if args.mode == "ffn" else None,
        pretrained=pretrained,
        shift_mode=args.shift_mode,
        dropout=args.dropout,
        channels_last=channels_last,
        private_bn=args.private_bn,
        weight_alteration=args.weight_alteration,
    )


def compute_loss(mode: str, logits_by_rate: dict[int, torch.Tensor], labels: torch.Tensor, lam: float,
                 ce_all_rates: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return (loss, parts): cross-entropy (tsm) or the FFN distillation loss (ffn), computed in float32.

    The parts are detached scalar tensors, read (a device sync) only when they are logged.
    """
    logits_by_rate = {rate: logits.float() for rate, logits in logits_by_rate.items()}
    if mode == "tsm":
        (logits,) = logits_by_rate.values()
        loss = F.cross_entropy(logits, labels)
        return loss, {"ce": loss.detach()}
    return distillation_loss(logits_by_rate, labels, lam=lam, ce_all_rates=ce_all_rates)


class LearningRateShape:
    """Multiplier of the peak rate at a step: linear warm-up, then cosine to zero or x0.1 steps.

    A plain object (not a lambda) so that LambdaLR's state_dict records it and --resume restores it.
    """

    def __init__(self, schedule: str, steps_per_epoch: int, epochs: int, warmup_epochs: float,
                 lr_steps: Sequence[int]) -> None:
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.lr_steps = [int(epoch) for epoch in lr_steps]

    def __call__(self, step: int) -> float:
        """Return the multiplier for optimiser step `step` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "step":
            epoch = step // self.steps_per_epoch
            return 0.1 ** sum(epoch >= boundary for boundary in self.lr_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def scaled_learning_rate(base_lr: float, total_batch: int) -> float:
    """Return --lr scaled linearly from a total batch of 32 videos to the actual total batch."""
    return base_lr * total_batch / REFERENCE_TOTAL_BATCH


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and logs
# ----------------------------------------------------------------------------------------------------------------


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary name, fsync, then rename: a reader never sees half a checkpoint."""
    with atomic_file(path) as handle:
        torch.save(payload, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load one of our checkpoints on the CPU.

    Raises
    ------
    SystemExit
        If the file is missing or lacks the keys this script writes.
    """
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no checkpoint there; check --resume / --output")
    payload = load_checkpoint_file(path)
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise SystemExit(f"{path}: not a train.py checkpoint (missing {', '.join(missing)}); give a last.pt")
    return payload


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


def same_model(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """True when two model configs describe the same network (memory format aside)."""
    ignored = ("channels_last", "pretrained")
    return {k: v for k, v in first.items() if k not in ignored} == {k: v for k, v in second.items() if k not in ignored}


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


# ----------------------------------------------------------------------------------------------------------------
# Evaluation (shared with evaluate.py)
# ----------------------------------------------------------------------------------------------------------------


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, top_k: int = TOP_K) -> torch.Tensor:
    """Return the (top-1 correct, top-k correct) counts as an int64 tensor on the logits' device (no sync).

    k is capped at the number of classes.
    """
    k = min(top_k, logits.shape[1])
    predictions = logits.topk(k, dim=1).indices
    hits = predictions.eq(labels.unsqueeze(1))
    return torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()])


@torch.no_grad()
def evaluate_networks(networks: dict[str, nn.Module], loader: Any, rates: Sequence[int], device: torch.device,
                      precision: str) -> dict[str, dict[int, dict[str, float]]]:
    """Evaluate networks at every rate in one pass over the loader.

    Multi-view batches ("views" V > 1: crops x clips) are averaged in logit space per video.

    Returns
    -------
    dict
        {name: {T: {"top1": percent, "top5": percent, "n": videos}}}, summed over all ranks.
    """
    correct = torch.zeros(len(networks), len(rates), 2, dtype=torch.int64, device=device)  # read once, at the end
    videos = 0
    for network in networks.values():
        network.eval()
    for batch in loader:
        labels = batch["label"].to(device)
        views = int(batch.get("views", 1))
        frames_by_rate = frames_to_device(batch, rates, device)
        for model_index, network in enumerate(networks.values()):
            for rate_index, rate in enumerate(rates):
                with autocast_context(precision, device):
                    logits = network(frames_by_rate[rate]).float()
                logits = logits.view(labels.shape[0], views, -1).mean(dim=1)
                correct[model_index, rate_index] += topk_correct(logits, labels)
        videos += labels.shape[0]
    totals = torch.full((len(networks), len(rates), 1), float(videos), dtype=torch.float64)
    counts = torch.cat([correct.cpu().double(), totals], dim=2)
    counts = torch.tensor(reduce_counts(counts, device), dtype=torch.float64).view_as(counts)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for model_index, name in enumerate(networks):
        results[name] = {}
        for rate_index, rate in enumerate(rates):
            top1, top5, total = counts[model_index, rate_index].tolist()
            results[name][rate] = {
                "top1": 100.0 * top1 / max(total, 1.0), "top5": 100.0 * top5 / max(total, 1.0), "n": int(total)
            }
    return results


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


class Trainer:
    """One training run: model, optimiser, schedule, loaders, checkpoints and logs of one process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device, self.rank, self.world_size = init_distributed(args.device)
        self.is_main = self.rank == 0
        if args.threads:
            torch.set_num_threads(args.threads)
        self.precision = resolve_precision(args.precision, self.device)
        self.channels_last = resolve_channels_last(args.channels_last, self.device)
        self.output = Path(args.output)
        self.last_path = self.output / LAST_CHECKPOINT
        self.best_path = self.output / BEST_CHECKPOINT
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(args.seed + self.rank)
        num_classes = args.num_classes or read_num_classes(args.shards, args.train_split)
        self.network = build_network(args, num_classes, self.channels_last).to(self.device)
        self.config = dict(self.network.config)
        self.rates = list(args.frames)
        self.val_rate = max(self.rates)
        self.val_rates = sorted(set(args.val_frames or []) | {self.val_rate})
        self.train_loader = make_loader(args, args.train_split, self.rates, True, args.batch_size, self.device,
                                        self.rank, self.world_size)
        self.val_loader = make_loader(args, args.val_split, self.val_rates, False, args.val_batch_size,
                                      self.device, self.rank, self.world_size)
        self.steps_per_epoch = len(self.train_loader)
        if args.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, args.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise SystemExit(f"{args.shards}: the {args.train_split} split gives no full batch of "
                             f"{args.batch_size} per process; lower --batch-size")
        self.total_batch = args.batch_size * self.world_size
        self.lr = scaled_learning_rate(args.lr, self.total_batch)
        # Without --official-groups every parameter is decayed; with it, BatchNorm parameters and biases are not and
        # the classifier weight / bias get lr x5 / x10 (the official recipe).
        self.optimizer = build_optimizer(self.network, self.lr, args.momentum, args.weight_decay,
                                         args.official_groups, optimizer=args.optimizer)
        self.shape = LearningRateShape(args.schedule, self.steps_per_epoch, args.epochs, args.warmup_epochs,
                                       args.lr_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.shape)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.model = self.network  # forward({T: frames}) runs forward_rates, so DDP can wrap the network itself
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_top1 = -1.0
        self.best_epoch = 0
        self.global_step = 0
        self.writer = None

    # -- state -----------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """Return the run's settings (recorded in settings.json and in every checkpoint's metrics)."""
        recorded = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(self.args).items()}
        recorded.update(world_size=self.world_size, total_batch=self.total_batch, effective_lr=self.lr,
                        precision_used=self.precision, channels_last_used=self.channels_last,
                        device=str(self.device), steps_per_epoch=self.steps_per_epoch)
        return recorded

    def resume(self, path: Path) -> None:
        """Restore model, optimiser, schedule, scaler, history and RNG from a checkpoint."""
        payload = load_checkpoint(path)
        if not same_model(payload["config"], self.config):
            raise SystemExit(f"{path}: built for another model ({payload['config']}); use the same flags as the run")
        self.network.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        metrics = payload["metrics"]
        self.start_epoch = int(payload["epoch"])
        self.history = list(metrics.get("history", []))
        self.best_top1 = float(metrics.get("best_top1", -1.0))
        self.best_epoch = int(metrics.get("best_epoch", 0))
        self.global_step = self.start_epoch * self.steps_per_epoch
        states = payload["rng"]
        restore_rng_state(states[self.rank] if self.rank < len(states) else states[0])
        if self.is_main:
            print(f"resumed from {path} after epoch {self.start_epoch}", flush=True)

    def checkpoint(self, epoch_count: int, improved: bool) -> None:
        """Write last.pt (and best.pt when improved) atomically; every rank joins the RNG gather."""
        rng_states = gather_rng_states()
        if not self.is_main:
            return
        payload = {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": epoch_count,
            "rng": rng_states,
            "config": self.config,
            "metrics": {
                "history": self.history,
                "last": self.history[-1] if self.history else {},
                "best_top1": self.best_top1,
                "best_epoch": self.best_epoch,
                "val_frames": self.val_rate,
                "settings": self.settings(),
            },
        }
        save_atomic(payload, self.last_path)
        if improved:
            save_atomic(payload, self.best_path)

    # -- loop -----------------------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; return loss, top-1 (highest rate), clips/s and the data-wait fraction."""
        from tqdm import tqdm

        self.model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        show_bar = self.is_main and not self.args.no_progress
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.args.epochs}", disable=not show_bar,
                   dynamic_ncols=True, leave=False, file=sys.stdout)
        sums = torch.zeros(3, dtype=torch.float64)  # loss x videos, top-1 correct, videos
        wait_total, start = 0.0, time.perf_counter()
        batches = itertools.islice(timed_batches(self.train_loader), self.steps_per_epoch)
        for step, (batch, wait) in enumerate(batches):
            loss_value, correct, videos = self.train_step(batch, epoch, step)
            wait_total += wait
            sums += torch.tensor([loss_value * videos, correct, videos], dtype=torch.float64)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{100 * sums[1] / sums[2]:.1f}",
                            clips_s=f"{sums[2] * self.world_size / elapsed:.1f}", wait=f"{wait_total / elapsed:.2f}")
            bar.update(1)
        bar.close()
        elapsed = time.perf_counter() - start
        sums = torch.tensor(reduce_counts(sums, self.device), dtype=torch.float64)
        return {
            "train_loss": float(sums[0] / max(sums[2], 1)),
            "train_top1": float(100 * sums[1] / max(sums[2], 1)),
            "clips_per_s": float(sums[2] / elapsed),
            "data_wait": wait_total / elapsed,
            "epoch_s": elapsed,
        }

    def train_step(self, batch: dict[str, Any], epoch: int, step: int) -> tuple[float, int, int]:
        """One optimiser step; return (mean loss over all ranks, top-1 correct here, videos here)."""
        frames_by_rate = frames_to_device(batch, self.rates, self.device)
        labels = batch["label"].to(self.device, non_blocking=True)
        with autocast_context(self.precision, self.device):
            logits_by_rate = self.model(frames_by_rate)
        loss, parts = compute_loss(self.args.mode, logits_by_rate, labels, self.args.lam, self.args.ce_all_rates)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.args.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), self.args.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        loss_mean = loss.detach().float().reshape(1)
        if is_distributed():
            dist.all_reduce(loss_mean)
            loss_mean /= self.world_size
        loss_value = float(loss_mean)
        check_finite(loss_value, epoch, step, self.global_step, self.last_path)
        top_logits = logits_by_rate[self.val_rate].detach().float()
        correct = int(top_logits.argmax(dim=1).eq(labels).sum())
        if self.writer is not None and self.global_step % 10 == 0:
            self.writer.add_scalar("train/loss", loss_value, self.global_step)
            for name, value in parts.items():
                self.writer.add_scalar(f"train/{name}", float(value), self.global_step)
            self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.global_step)
        return loss_value, correct, int(labels.shape[0])

    def validate(self) -> dict[str, Any]:
        """Top-1 / top-5 on the validation split at the highest trained frame count (and at --val-frames)."""
        results = evaluate_networks({"model": self.network}, self.val_loader, self.val_rates, self.device,
                                    self.precision)["model"]
        result = results[self.val_rate]
        record: dict[str, Any] = {"val_frames": self.val_rate, "val_top1": result["top1"], "val_top5": result["top5"],
                                  "val_n": result["n"]}
        if len(self.val_rates) > 1:
            record["val_top1_at"] = {str(rate): results[rate]["top1"] for rate in self.val_rates}
        return record

    def run(self) -> dict[str, Any]:
        """Train from start_epoch to the last epoch (or --stop-after-epochs); return the last epoch's record."""
        args = self.args
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            self.writer = open_tensorboard(self.output)
            if self.network.backbone_load is not None:
                print(self.network.backbone_load.summary(), flush=True)
            write_json_atomic(self.output / SETTINGS_JSON, self.settings())
            print(f"{args.mode} frames={self.rates} arch={args.arch} device={self.device} x{self.world_size} "
                  f"precision={self.precision} channels_last={self.channels_last} batch={args.batch_size}/process "
                  f"(total {self.total_batch}) lr={args.lr} for batch {REFERENCE_TOTAL_BATCH} -> effective "
                  f"lr={self.lr:.6g} ({args.optimizer}, {args.schedule}) steps/epoch={self.steps_per_epoch}",
                  flush=True)
        last_epoch = args.epochs
        if args.stop_after_epochs is not None:
            last_epoch = min(args.epochs, self.start_epoch + args.stop_after_epochs)
        record: dict[str, Any] = self.history[-1] if self.history else {}
        for epoch in range(self.start_epoch, last_epoch):
            record = {"epoch": epoch + 1, "lr": self.scheduler.get_last_lr()[0]}
            record.update(self.train_epoch(epoch))
            if (epoch + 1) % max(args.val_every, 1) == 0 or epoch + 1 == args.epochs:
                record.update(self.validate())
            improved = "val_top1" in record and record["val_top1"] > self.best_top1
            if improved:
                self.best_top1, self.best_epoch = record["val_top1"], epoch + 1
            self.history.append(record)
            self.checkpoint(epoch + 1, improved)
            if self.is_main:
                self.report_epoch(record)
        if self.writer is not None:
            self.writer.close()
        return record

    def report_epoch(self, record: dict[str, Any]) -> None:
        """Print one line, rewrite log.csv and add the epoch's scalars to TensorBoard."""
        validation = (f" val@{record['val_frames']}F top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f}"
                      if "val_top1" in record else "")
        if "val_top1_at" in record:
            validation += " (" + " ".join(f"{rate}F {top1:.1f}" for rate, top1 in record["val_top1_at"].items()) + ")"
        print(f"epoch {record['epoch']}/{self.args.epochs} loss {record['train_loss']:.4f} "
              f"train top1 {record['train_top1']:.2f}{validation} {record['clips_per_s']:.1f} clips/s "
              f"data wait {100 * record['data_wait']:.0f}% {record['epoch_s']:.1f} s", flush=True)
        write_log_csv(self.output / LOG_CSV, self.history)
        if self.writer is not None:
            for key in ("train_loss", "train_top1", "val_top1", "val_top5", "clips_per_s", "data_wait"):
                if key in record:
                    self.writer.add_scalar(f"epoch/{key}", record[key], record["epoch"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, build, optionally resume, train; return the exit status."""
    args = resolve_args(argv)
    trainer = Trainer(args)
    try:
        if args.resume:
            trainer.resume(trainer.last_path if args.resume == "auto" else Path(args.resume))
        trainer.run()
    except NonFiniteLossError as error:
        print(f"train.py: stopped: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        if is_distributed():
            dist.destroy_process_group()
    if trainer.is_main:
        print(f"done: best val top-1 {trainer.best_top1:.2f} at epoch {trainer.best_epoch}; "
              f"checkpoints in {trainer.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
