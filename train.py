"""Train a vanilla model (one frame count; one model per count is "separated training") or an FFN on packed JPEG
shards, for any registered model family (``--arch``: TSM by default).

Usage (one process, any device)::

    python train.py --mode vanilla --frames 16 --shards database/shards --output runs/tsm16
    python train.py --mode ffn --frames 4 8 16 --shards database/shards --output runs/ffn
    python train.py --mode ffn --frames 4 8 16 --arch tea_tiny --preset demo --shards ... --output ...

Several processes (DDP; NCCL on CUDA, gloo on CPU)::

    torchrun --nproc_per_node=8 train.py --mode ffn --frames 4 8 16 --shards ... --output ...

``--lr`` is the learning rate for a total batch of ``--lr-batch`` videos (32); it is scaled linearly with the actual
total batch (batch per process x processes x accumulated micro-batches) and the effective rate is printed.
``--total-batch N`` keeps N videos per optimiser step: ``--batch-size`` videos per forward pass (what BatchNorm
sees) and, on fewer processes than N / batch, that many micro-batches accumulated per step. ``--preset official``
is the official run of the family of ``--arch`` (each family registers its recipe with the model registry, with
the official scripts' per-dataset differences for the dataset the shards' manifest names), ``--preset demo`` the
synthetic-data recipe of ``make demo``. The class count and names come from the manifest; so does ``--flip`` when
not given (on for Kinetics and HMDB51, off for Something-Something, whose classes name left and right). Every
epoch writes ``last.pt`` (and
``best.pt`` when the validation top-1 at the highest trained frame count improves) atomically; ``--resume``
continues exactly where ``last.pt`` stopped. SIGUSR1 or SIGTERM (a cluster's time-limit warning, a preemption)
ends the run after the current step with a mid-epoch ``last.pt`` that ``--resume`` continues from, bit for bit.
Every checkpoint also records what predict.py needs (arch, trained frames, class names from the shards'
manifest, transform sizes: engine.inference.inference_record).

The pieces shared with evaluate.py, pretrain.py, the demo and the benchmarks live in engine/ (distributed set-up,
precision, RNG state, checkpoints, schedule, loaders, evaluation); this script keeps the command line, the
training loop and its logs. ``frames`` are the trained frame counts (one FFN branch each).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.atomic import atomic_file, write_json_atomic
from common.distributed import broadcast_buffers, close_distributed, gather_from_ranks, init_distributed
from data_pipeline import add_loader_arguments, loader_options
from data_pipeline.clip_augment import BatchAugment
from engine.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint, same_model, save_atomic
from engine.config import BASE_DEFAULTS, preset_arch, preset_names, preset_values
from engine.data import check_model_input, make_loader, normalisation_of, read_num_classes, read_shard_facts
from engine.evaluation import evaluate_networks
from engine.inference import INFERENCE_KEY, inference_record
from engine.precision import CHANNELS_LAST_CHOICES, PRECISIONS, resolve_channels_last, resolve_precision
from engine.rng import gather_rng_states, restore_rng_state, seed_everything
from engine.schedule import SCHEDULES, LearningRateShape, accumulation_steps, scaled_learning_rate
from engine.stop_request import StopRequest, signal_name
from engine.training import (
    TRAINING_MODES,
    Criterion,
    EpochPosition,
    NonFiniteLossError,
    StepLogger,
    StopCheck,
    make_criterion,
    train_one_epoch,
)
from model import PARAM_GROUP_POLICIES, build_model, build_optimizer, model_names, model_options
from model.optim import OPTIMIZERS, resolve_policy
from model.registry import default_pretrained

LOG_CSV = "log.csv"
SETTINGS_JSON = "settings.json"
# Loader options with a training flag; those a preset may set default to None until the preset fills them.
LOADER_FLAGS = ("num_workers", "decode", "sampling", "tar_reader", "short_video", "crop_size", "test_resize",
                "multi_scale", "flip", "train_crop", "jitter_range", "train_views", "rand_augment", "test_crops",
                "test_crop_size", "test_crop_layout")
PRESET_LOADER_FLAGS = ("sampling", "crop_size", "test_resize", "multi_scale", "train_crop", "jitter_range",
                       "train_views", "rand_augment", "test_crops", "test_crop_size", "test_crop_layout")
VAL_PRECISIONS = ("same", "fp32", "bf16", "fp16")
TRAIN_SHORT_VIDEO_RULES = ("official", "spread")
# Model options with a flag; a family that does not take one refuses it when given on the command line.
MODEL_FLAGS = ("shift_mode", "slow_mode", "dropout", "drop_path_rate", "private_norms", "weight_alteration")
POSITION_KEY = "position"  # a mid-epoch checkpoint's place in its epoch (absent at an epoch's end)
LOG_COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "val_frames", "val_top1", "val_top5", "val_n",
    "clips_per_s", "data_wait", "epoch_s",
)


# Command line


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (preset-controlled flags default to None and are filled by resolve_args)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mode", choices=TRAINING_MODES, required=True,
                        help="vanilla: one frame count (a plain model); ffn: several (one branch each)")
    parser.add_argument("--frames", type=int, nargs="+", required=True, help="frame count(s), e.g. 16 or 4 8 16")
    parser.add_argument("--shards", type=Path, required=True, help="folder with <split>.manifest.json and tars")
    parser.add_argument("--output", type=Path, required=True, help="run folder (checkpoints, log.csv)")
    parser.add_argument("--preset", choices=preset_names(), default=None,
                        help="a documented recipe (official: the official run of --arch's family); flags win")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="validation")
    parser.add_argument("--num-classes", type=int, default=None, help="default: from the shards' labels")
    group = parser.add_argument_group("model")
    group.add_argument("--arch", default=None, choices=model_names(), metavar="ARCH",
                       help=f"a registered model: {', '.join(model_names())} (default resnet50)")
    group.add_argument("--pretrained", default=None,
                       help="auto (the model's named source, e.g. imagenet for the ImageNet ResNets; else none), "
                            "imagenet, none, or the path of a pretrained backbone file (e.g. pretrain.py's backbone.pt)")
    group.add_argument("--shift-mode", default=None,
                       help="TSM: per-video (default) or official (the official training's grouping of 16 frames)")
    group.add_argument("--slow-mode", default=None,
                       help="SlowFast: per-clip (default) or official (the official training's Slow frames)")
    group.add_argument("--dropout", type=float, default=None, help="dropout before the classifier")
    group.add_argument("--drop-path-rate", type=float, default=None,
                       help="UniFormer: stochastic depth of the last block (rising linearly from 0)")
    group.add_argument("--private-norms", action=argparse.BooleanOptionalAction, default=None,
                       help="FFN: a norm set per frame count (--no-private-norms: one shared set, an ablation)")
    group.add_argument("--weight-alteration", action=argparse.BooleanOptionalAction, default=None,
                       help="FFN: per-frame-count Weight Alteration convs (--no-weight-alteration: an ablation)")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, default=None)
    group.add_argument("--batch-size", type=int, default=None,
                       help="videos per process and forward pass, what BatchNorm sees (default 8)")
    group.add_argument("--total-batch", type=int, default=None,
                       help="videos per optimiser step over all processes: micro-batches of --batch-size are "
                            "accumulated to reach it (default: batch x processes)")
    group.add_argument("--lr", type=float, default=None, help="rate for a total batch of --lr-batch (scaled linearly)")
    group.add_argument("--lr-batch", type=int, default=None, help="the total batch --lr is given for (32)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    group.add_argument("--momentum", type=float, default=None)
    group.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None, help="SGD: Nesterov")
    group.add_argument("--betas", type=float, nargs=2, default=None, help="AdamW betas (0.9 0.999)")
    group.add_argument("--eps", type=float, default=None, help="AdamW eps (1e-8)")
    group.add_argument("--weight-decay", type=float, default=None)
    group.add_argument("--param-groups", choices=tuple(PARAM_GROUP_POLICIES), default=None,
                       help="parameter-group policy: weight decay and lr multipliers per parameter (default all)")
    group.add_argument("--official-groups", action=argparse.BooleanOptionalAction, default=None,
                       help="the same as --param-groups official-tsm (no decay on norms / biases, classifier "
                            "lr x5 / x10)")
    group.add_argument("--schedule", choices=SCHEDULES, default=None)
    group.add_argument("--lr-steps", type=int, nargs="+", default=None, help="epochs of the step schedule's steps")
    group.add_argument("--lr-step-factors", type=float, nargs="+", default=None,
                       help="the multiplier from each --lr-steps epoch on (default 0.1, 0.01, ...)")
    group.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up length")
    group.add_argument("--warmup-start", type=float, default=None,
                       help="warm-up start as a fraction of the peak rate (PySlowFast's per-iteration warm-up); "
                            "default: from zero")
    group.add_argument("--lr-floor", type=float, default=None, help="cosine end as a fraction of the peak (0)")
    group.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (default: none)")
    group.add_argument("--lam", type=float, default=1.0, help="FFN: weight of the KL terms (0: CE on the highest "
                                                               "frame count only, an ablation)")
    group.add_argument("--ce-all-frames", action="store_true",
                       help="FFN: cross-entropy at every frame count (not the official loss: CE at the highest only)")
    group = parser.add_argument_group("augmentation of the training batch (on the device)")
    group.add_argument("--mixup", type=float, default=None, help="mixup beta parameter (0: off)")
    group.add_argument("--cutmix", type=float, default=None, help="cutmix beta parameter (0: off)")
    group.add_argument("--mixup-switch-prob", type=float, default=None,
                       help="probability of cutmix instead of mixup when both are on (0.5)")
    group.add_argument("--label-smoothing", type=float, default=None, help="of the training targets (0)")
    group.add_argument("--random-erasing", type=float, default=None,
                       help="probability of erasing one box through all frames of a clip (0)")
    group = parser.add_argument_group("data")
    add_loader_arguments(group, LOADER_FLAGS, defaults={name: None for name in (*PRESET_LOADER_FLAGS, "flip")})
    group.add_argument("--val-batch-size", type=int, default=None, help="default: --batch-size")
    group.add_argument("--val-every", type=int, default=None, help="validate every N epochs (and always at the end)")
    group.add_argument("--val-frames", type=int, nargs="+", default=None,
                       help="frame counts validated (default: the highest trained; best.pt follows that one)")
    group = parser.add_argument_group("run")
    group.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    group.add_argument("--precision", choices=PRECISIONS, default=None,
                       help="auto: bf16 autocast on CUDA, fp32 on CPU/MPS; fp16 uses a GradScaler (a preset's "
                            "fp16 falls back to fp32 off CUDA)")
    group.add_argument("--val-precision", choices=VAL_PRECISIONS, default=None,
                       help="validation precision (same: the training one)")
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

    The preset's per-dataset overrides follow the dataset the training split's manifest names (``args.dataset``);
    ``--flip`` not given follows the manifest's rule (off when it records none). Frame counts are sorted and
    deduplicated: ``args.frames`` are the trained counts (one per FFN branch).

    Raises
    ------
    SystemExit
        On an invalid combination (a clear one-line message).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = {name for name in MODEL_FLAGS if getattr(args, name) is not None}
    facts = read_shard_facts(args.shards, args.train_split)
    args.dataset = facts["dataset"]
    if args.flip is None:
        args.flip = bool(facts["flip"])
    if args.official_groups is not None and args.param_groups is None:
        args.param_groups = "official-tsm" if args.official_groups else "all"
    args.arch = preset_arch(args.preset, args.arch)
    try:
        preset = preset_values(args.preset, args.arch, args.dataset)
    except ValueError as error:
        parser.error(str(error))
    unknown = sorted(set(preset) - set(vars(args)))
    if unknown:
        parser.error(f"--preset {args.preset} sets {unknown}, which train.py does not take")
    args.preset_keys = sorted(key for key in preset if getattr(args, key) is None)
    for key in args.preset_keys:
        setattr(args, key, preset[key])
    for key, value in BASE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.val_batch_size is None:
        args.val_batch_size = args.batch_size
    args.frames = sorted(set(args.frames))
    if args.mode == "vanilla" and len(args.frames) != 1:
        parser.error("--mode vanilla takes one frame count (train one model per count for separated training)")
    if args.mode == "ffn" and len(args.frames) < 2:
        parser.error("--mode ffn needs at least two frame counts, e.g. --frames 4 8 16")
    if min(args.frames) < 1 or args.batch_size < 1 or args.epochs < 1:
        parser.error("--frames, --batch-size and --epochs must be positive")
    if (args.total_batch is not None and args.total_batch < 1) or args.lr_batch < 1 or args.train_views < 1:
        parser.error("--total-batch, --lr-batch and --train-views must be positive")
    args.param_groups = resolve_policy(args.param_groups)
    if args.lam < 0:
        parser.error("--lam must be zero or positive")
    if args.val_frames is not None and min(args.val_frames) < 1:
        parser.error("--val-frames must be positive frame counts")
    if args.short_video not in TRAIN_SHORT_VIDEO_RULES:
        parser.error(f"--short-video {args.short_video} is a test-only rule; use one of {TRAIN_SHORT_VIDEO_RULES}")
    accepted = model_options(args.arch)
    for name in MODEL_FLAGS:
        if name in explicit and name not in accepted:
            parser.error(f"--{name.replace('_', '-')} does not apply to --arch {args.arch} (it takes "
                         f"{', '.join(sorted(accepted)) or 'no option'})")
    if args.pretrained == "auto":
        args.pretrained = default_pretrained(args.arch) or "none"
    return args


# Model


def build_network(args: argparse.Namespace, num_classes: int, channels_last: bool) -> nn.Module:
    """Build the vanilla model (mode vanilla) or the FFN (mode ffn) of the arguments, through the model registry.

    Model flags that are set (on the command line or by the preset) go to the model when its family takes them;
    channels_last goes to families that have it.
    """
    pretrained = None if args.pretrained in (None, "none") else args.pretrained
    accepted = model_options(args.arch)
    requested = {name: getattr(args, name) for name in MODEL_FLAGS} | {"channels_last": channels_last}
    options = {name: value for name, value in requested.items() if value is not None and name in accepted}
    return build_model(args.arch, num_classes, trained_frames=tuple(args.frames) if args.mode == "ffn" else None,
                       pretrained=pretrained, **options)


# The process and what it builds


@dataclass(frozen=True)
class Process:
    """This process's place in the run and how it computes (built once, by `init_process`)."""

    device: torch.device
    rank: int
    world_size: int
    precision: str
    channels_last: bool
    val_precision: str = "fp32"

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes files and prints)."""
        return self.rank == 0


@dataclass
class Progress:
    """Where the run stands: epochs done, optimiser steps done, the best validation so far and the history.

    After a resume from a mid-epoch checkpoint, `position` is this rank's place in epoch `start_epoch` and
    `epoch_record` that epoch's record so far (its number and starting learning rate). `stopped_by` is the stop
    signal that ended the run early (0: none).
    """

    start_epoch: int = 0
    global_step: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    position: EpochPosition | None = None
    epoch_record: dict[str, Any] = field(default_factory=dict)
    stopped_by: int = 0


def init_process(args: argparse.Namespace) -> Process:
    """Start the process group under torchrun, choose the device and precision, seed this rank."""
    device, rank, world_size = init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(preset_precision(args, device, rank), device)
    val_precision = precision if args.val_precision == "same" else resolve_precision(args.val_precision, device)
    channels_last = resolve_channels_last(args.channels_last, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(args.seed + rank)
    return Process(device, rank, world_size, precision, channels_last, val_precision)


def preset_precision(args: argparse.Namespace, device: torch.device, rank: int) -> str:
    """The training precision asked for: a preset's fp16 / bf16 (autocast needs CUDA) is fp32 on another device,
    with a one-line note; a --precision given on the command line is taken as it is."""
    if "precision" in args.preset_keys and args.precision in ("fp16", "bf16") and device.type != "cuda":
        if rank == 0:
            print(f"precision: the {args.preset} preset's {args.precision} autocast needs CUDA; training in fp32 on "
                  f"{device.type}", flush=True)
        return "fp32"
    return args.precision


def validation_frames(args: argparse.Namespace) -> list[int]:
    """Return the frame counts validated: the highest trained one and any --val-frames, sorted."""
    return sorted(set(args.val_frames or []) | {max(args.frames)})


def build_loaders(args: argparse.Namespace, process: Process, network: nn.Module) -> tuple[Any, Any]:
    """The training and validation loaders of this rank (batches arrive on the process's device, normalised as the
    network's input spec says)."""
    options = loader_options(args, LOADER_FLAGS)
    common = {"device": process.device, "rank": process.rank, "world_size": process.world_size, "seed": args.seed,
              "normalisation": normalisation_of(network)}
    train_loader = make_loader(args.shards, args.train_split, frames=tuple(args.frames), batch_size=args.batch_size,
                               train=True, **common, **options)
    val_options = dict(options, multi_scale=False, flip=False)
    val_loader = make_loader(args.shards, args.val_split, frames=tuple(validation_frames(args)),
                             batch_size=args.val_batch_size, train=False, **common, **val_options)
    return train_loader, val_loader


def epoch_steps(args: argparse.Namespace, train_loader: Any, accumulation: int = 1) -> int:
    """Optimiser steps per epoch: the loader's exact batches // micro-batches per step, capped by
    --max-steps-per-epoch."""
    steps = len(train_loader) // accumulation
    if args.max_steps_per_epoch:
        steps = min(steps, args.max_steps_per_epoch)
    if steps < 1:
        raise SystemExit(f"{args.shards}: the {args.train_split} split gives no full step of {accumulation} "
                         f"batch(es) of {args.batch_size} per process; lower --batch-size or --total-batch")
    return steps


def total_batch(args: argparse.Namespace, process: Process, accumulation: int) -> int:
    """Videos per optimiser step over all processes."""
    return args.batch_size * process.world_size * accumulation


def build_optimization(args: argparse.Namespace, network: nn.Module, steps_per_epoch: int, process: Process,
                       accumulation: int = 1) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler, float]:
    """The optimiser (the rate scaled to the total batch), its per-step schedule, the GradScaler, the rate."""
    lr = scaled_learning_rate(args.lr, total_batch(args, process, accumulation), args.lr_batch)
    # The parameter-group policy decides each parameter's weight decay and lr multiplier (model.optim).
    optimizer = build_optimizer(network, lr, args.momentum, args.weight_decay, optimizer=args.optimizer,
                                param_groups=args.param_groups, nesterov=args.nesterov, betas=args.betas,
                                eps=args.eps)
    shape = LearningRateShape(args.schedule, steps_per_epoch, args.epochs, args.warmup_epochs, args.lr_steps,
                              lr_step_factors=args.lr_step_factors, warmup_start=args.warmup_start,
                              lr_floor=args.lr_floor)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    scaler = torch.amp.GradScaler(process.device.type, enabled=process.precision == "fp16")
    return optimizer, scheduler, scaler, lr


def wrap_for_processes(network: nn.Module, process: Process) -> nn.Module:
    """DistributedDataParallel around the network under torchrun, else the network itself.

    ``forward({T: videos})`` runs ``forward_by_frames``, so DDP can wrap the network itself.
    """
    if process.world_size <= 1:
        return network
    device_ids = [process.device.index] if process.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def run_settings(args: argparse.Namespace, process: Process, lr: float, steps_per_epoch: int,
                 accumulation: int = 1) -> dict[str, Any]:
    """Return the run's settings (recorded in settings.json and in every checkpoint's metrics)."""
    recorded = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    recorded.update(world_size=process.world_size, total_batch=total_batch(args, process, accumulation),
                    micro_batches_per_step=accumulation, effective_lr=lr, precision_used=process.precision,
                    val_precision_used=process.val_precision, channels_last_used=process.channels_last,
                    device=str(process.device), steps_per_epoch=steps_per_epoch)
    return recorded


def batch_augmentation(args: argparse.Namespace, process: Process, num_classes: int) -> BatchAugment | None:
    """Random erasing, mixup / cutmix and label smoothing of the training batches on the device (None when off).

    Raises
    ------
    SystemExit
        When mixup / cutmix is on and a micro-batch holds an odd number of clips (they are mixed in pairs).
    """
    if not (args.random_erasing > 0 or args.mixup > 0 or args.cutmix > 0 or args.label_smoothing > 0):
        return None
    augment = BatchAugment(num_classes, seed=args.seed, rank=process.rank, erasing=args.random_erasing,
                           mixup=args.mixup, cutmix=args.cutmix, switch_prob=args.mixup_switch_prob,
                           label_smoothing=args.label_smoothing)
    if augment.mixer is not None and (args.batch_size * args.train_views) % 2:
        raise SystemExit(f"--mixup / --cutmix pair the clips of a batch: --batch-size {args.batch_size} x "
                         f"--train-views {args.train_views} must be even")
    return augment


# Checkpoints


def resume(path: Path, network: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
           scaler: torch.amp.GradScaler, process: Process, steps_per_epoch: int, layout: dict[str, int]) -> Progress:
    """Restore model, optimiser, schedule, scaler and this rank's RNG states; return where the run stands.

    A mid-epoch checkpoint also gives this rank's place in its epoch; it resumes only under the layout it was
    written with (`layout`: processes, videos per process, micro-batches per step, loader worker slots, steps per
    epoch), which fixes the epoch's batches.
    """
    payload = load_checkpoint(path)
    if not same_model(payload["config"], dict(network.config)):
        raise SystemExit(f"{path}: built for another model ({payload['config']}); use the same flags as the run")
    position = payload.get(POSITION_KEY)
    if position is not None and position["layout"] != layout:
        raise SystemExit(f"{path}: a mid-epoch checkpoint written with {describe_layout(position['layout'])}; "
                         f"resume with the same (this run has {describe_layout(layout)})")
    check_schedule_layout(path, payload["metrics"].get("settings", {}), layout)
    network.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if payload["scaler"]:
        scaler.load_state_dict(payload["scaler"])
    metrics = payload["metrics"]
    start_epoch = int(payload["epoch"])
    progress = Progress(start_epoch=start_epoch, global_step=start_epoch * steps_per_epoch,
                        best_top1=float(metrics.get("best_top1", -1.0)), best_epoch=int(metrics.get("best_epoch", 0)),
                        history=list(metrics.get("history", [])))
    states = payload["rng"]
    rng_state = states[process.rank] if process.rank < len(states) else states[0]
    restore_rng_state(rng_state)
    where = f"after epoch {start_epoch}"
    if position is not None:
        step = int(position["step"])
        sums = [float(value) for value in position["sums"][process.rank]]
        progress.position = EpochPosition(step, sums, rng_state)
        progress.epoch_record = dict(position["record"])
        progress.global_step += step
        where = f"at epoch {start_epoch + 1} step {step}/{steps_per_epoch}"
    if process.is_main:
        print(f"resumed from {path} {where}", flush=True)
    return progress


def check_schedule_layout(path: Path, recorded: dict[str, Any], layout: dict[str, int]) -> None:
    """Refuse to resume with another total batch or epoch length than the checkpoint's run.

    The optimiser and the schedule come back as they were (the rate scaled to the old total batch, the per-step
    shape counting the old steps per epoch), so a run resumed with other processes x --batch-size would train
    with a rate and a schedule it did not ask for. Checkpoints without recorded settings are not checked.
    """
    if "total_batch" not in recorded or "steps_per_epoch" not in recorded:
        return
    total_batch = layout["processes"] * layout["batch_size"] * layout["accumulation"]
    if (recorded["total_batch"], recorded["steps_per_epoch"]) != (total_batch, layout["steps_per_epoch"]):
        raise SystemExit(
            f"{path}: written by a run of total batch {recorded['total_batch']} ({recorded.get('world_size')} "
            f"process(es) x --batch-size {recorded.get('batch_size')}, {recorded['steps_per_epoch']} steps per "
            f"epoch); this run has {total_batch} ({describe_layout(layout)}), which would change the learning rate "
            f"and its schedule; resume with the same processes x --batch-size"
        )


def run_layout(args: argparse.Namespace, process: Process, steps_per_epoch: int,
               accumulation: int) -> dict[str, int]:
    """What fixes an epoch's batches besides the seed: processes, videos per process, micro-batches per step,
    loader slots, steps."""
    return {"processes": process.world_size, "batch_size": args.batch_size, "accumulation": accumulation,
            "loader_slots": max(1, args.num_workers), "steps_per_epoch": steps_per_epoch}


def describe_layout(layout: dict[str, int]) -> str:
    """The layout in words, with the flags that set it."""
    return (f"{layout['processes']} process(es) x --batch-size {layout['batch_size']} x "
            f"{layout.get('accumulation', 1)} micro-batch(es) x --workers {layout['loader_slots']} (1 = 0 or 1), "
            f"{layout['steps_per_epoch']} steps per epoch")


def save_checkpoints(output: Path, network: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: torch.amp.GradScaler, process: Process, progress: Progress, epoch_count: int,
                     improved: bool, metrics: dict[str, Any], inference: dict[str, Any],
                     position: dict[str, Any] | None = None) -> None:
    """Write last.pt (and best.pt when improved) atomically; every rank joins the RNG gather.

    `position` (a mid-epoch checkpoint): {"step", "sums" (this rank's), "record", "layout"}; every rank's sums
    are gathered into it. Rank 0's BatchNorm statistics are written; callers copy them to every rank first.
    """
    rng_states = gather_rng_states()
    if position is not None:
        position = dict(position, sums=gather_from_ranks(position["sums"]))
    if not process.is_main:
        return
    payload = {
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "epoch": epoch_count,
        "rng": rng_states,
        "config": dict(network.config),
        "metrics": {
            "history": progress.history,
            "last": progress.history[-1] if progress.history else {},
            "best_top1": progress.best_top1,
            "best_epoch": progress.best_epoch,
            **metrics,
        },
        INFERENCE_KEY: inference,
    }
    if position is not None:
        payload[POSITION_KEY] = position
    save_atomic(payload, output / LAST_CHECKPOINT)
    if improved:
        save_atomic(payload, output / BEST_CHECKPOINT)


# Validation and the epoch loop


def validate(network: nn.Module, val_loader: Any, val_frames: list[int], top_frames: int,
             process: Process) -> dict[str, Any]:
    """Top-1 / top-5 on the validation split at the highest trained frame count (and at --val-frames)."""
    results = evaluate_networks({"model": network}, val_loader, val_frames, process.device,
                                process.val_precision)["model"]
    result = results[top_frames]
    record: dict[str, Any] = {"val_frames": top_frames, "val_top1": result["top1"], "val_top5": result["top5"],
                              "val_n": result["n"]}
    if len(val_frames) > 1:
        record["val_top1_at"] = {str(frames): results[frames]["top1"] for frames in val_frames}
    return record


def fit(args: argparse.Namespace, process: Process, model: nn.Module, network: nn.Module, criterion: Criterion,
        optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler, train_loader: Any,
        val_loader: Any, steps_per_epoch: int, progress: Progress, settings: dict[str, Any],
        inference: dict[str, Any], accumulation: int = 1, batch_transform: BatchAugment | None = None,
        stop_check: StopCheck | None = None) -> dict[str, Any]:
    """Train from progress.start_epoch to the last epoch (or --stop-after-epochs); return the last epoch's record.

    `stop_check` (every rank calls it after every step and after every epoch's checkpoint) ends the run early:
    inside an epoch with a mid-epoch checkpoint, at an epoch's end after its checkpoint.
    """
    output = Path(args.output)
    writer = None
    if process.is_main:
        output.mkdir(parents=True, exist_ok=True)
        writer = open_tensorboard(output)
        if network.backbone_load is not None:
            print(network.backbone_load.summary(), flush=True)
        write_json_atomic(output / SETTINGS_JSON, settings)
        print(f"dataset {args.dataset or 'not recorded'}: {network.config['num_classes']} classes, training flip "
              f"{'on' if args.flip else 'off'}", flush=True)
        print(f"{args.mode} frames={list(args.frames)} arch={args.arch} device={process.device} "
              f"x{process.world_size} precision={process.precision} channels_last={process.channels_last} "
              f"batch={args.batch_size}/process x {accumulation} micro-batch(es) (total {settings['total_batch']}) "
              f"lr={args.lr} for batch {args.lr_batch} -> effective lr={settings['effective_lr']:.6g} "
              f"({args.optimizer}, {args.param_groups}, {args.schedule}) steps/epoch={steps_per_epoch}", flush=True)
        if args.total_batch is not None and settings["total_batch"] > args.total_batch:
            print(f"total batch: {process.world_size} processes x {args.batch_size} exceed --total-batch "
                  f"{args.total_batch}; each process keeps {args.batch_size} per pass, the total is "
                  f"{settings['total_batch']} and the rate is scaled with it", flush=True)
    top_frames = max(args.frames)
    val_frames = validation_frames(args)
    step_logger = tensorboard_step_logger(writer)
    checkpoint_metrics = {"val_frames": top_frames, "settings": settings}
    layout = run_layout(args, process, steps_per_epoch, accumulation)
    last_epoch = args.epochs
    if args.stop_after_epochs is not None:
        last_epoch = min(args.epochs, progress.start_epoch + args.stop_after_epochs)
    record: dict[str, Any] = progress.history[-1] if progress.history else {}
    for epoch in range(progress.start_epoch, last_epoch):
        start = progress.position if epoch == progress.start_epoch else None
        record = dict(progress.epoch_record) if start is not None else {}
        record = record or {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0]}
        bar = f"epoch {epoch + 1}/{args.epochs}" if process.is_main and not args.no_progress else None
        result = train_one_epoch(
            model, criterion, optimizer, scheduler, scaler, train_loader, process.device, epoch,
            steps=steps_per_epoch, precision=process.precision, top_frames=top_frames, clip_grad=args.clip_grad,
            global_step=progress.global_step, last_good=output / LAST_CHECKPOINT, step_logger=step_logger,
            progress=bar, accumulation=accumulation, batch_transform=batch_transform, start=start,
            stop_check=stop_check,
        )
        progress.global_step = result.global_step
        # Every rank validates, and rank 0 saves, with rank 0's BatchNorm statistics (DDP copies them at the next
        # training forward anyway).
        broadcast_buffers(network)
        if result.figures is None:
            position = {"step": result.position.step, "sums": result.position.sums, "record": record,
                        "layout": layout}
            save_checkpoints(output, network, optimizer, scheduler, scaler, process, progress, epoch, False,
                             checkpoint_metrics, inference, position)
            progress.stopped_by = result.stopped_by
            report_stop(process, result.stopped_by, f"at epoch {epoch + 1} step {result.position.step}/"
                        f"{steps_per_epoch}: mid-epoch checkpoint {output / LAST_CHECKPOINT}")
            break
        record.update(result.figures)
        if (epoch + 1) % max(args.val_every, 1) == 0 or epoch + 1 == args.epochs:
            record.update(validate(network, val_loader, val_frames, top_frames, process))
        improved = "val_top1" in record and record["val_top1"] > progress.best_top1
        if improved:
            progress.best_top1, progress.best_epoch = record["val_top1"], epoch + 1
        progress.history.append(record)
        save_checkpoints(output, network, optimizer, scheduler, scaler, process, progress, epoch + 1, improved,
                         checkpoint_metrics, inference)
        if process.is_main:
            report_epoch(output, args.epochs, progress.history, record, writer)
        stopped_by = result.stopped_by or (stop_check() if stop_check is not None else 0)
        if stopped_by and epoch + 1 < last_epoch:
            progress.stopped_by = stopped_by
            report_stop(process, stopped_by, f"after epoch {epoch + 1}: checkpoint {output / LAST_CHECKPOINT}")
            break
    if writer is not None:
        writer.close()
    return record


def report_stop(process: Process, stopped_by: int, where: str) -> None:
    """Rank 0 says where a stop signal ended the run and how it goes on."""
    if process.is_main:
        print(f"train.py: stopped by {signal_name(stopped_by)} {where}; --resume continues from there", flush=True)


# Logs


def report_epoch(output: Path, epochs: int, history: list[dict[str, Any]], record: dict[str, Any],
                 writer: Any) -> None:
    """Print one line, rewrite log.csv and add the epoch's scalars to TensorBoard."""
    validation = (f" val@{record['val_frames']}F top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f}"
                  if "val_top1" in record else "")
    if "val_top1_at" in record:
        validation += " (" + " ".join(f"{frames}F {top1:.1f}" for frames, top1 in record["val_top1_at"].items()) + ")"
    print(f"epoch {record['epoch']}/{epochs} loss {record['train_loss']:.4f} "
          f"train top1 {record['train_top1']:.2f}{validation} {record['clips_per_s']:.1f} clips/s "
          f"data wait {100 * record['data_wait']:.0f}% {record['epoch_s']:.1f} s", flush=True)
    write_log_csv(output / LOG_CSV, history)
    if writer is not None:
        for key in ("train_loss", "train_top1", "val_top1", "val_top5", "clips_per_s", "data_wait"):
            if key in record:
                writer.add_scalar(f"epoch/{key}", record[key], record["epoch"])


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


def tensorboard_step_logger(writer: Any) -> StepLogger | None:
    """A step logger writing the loss, its parts and the learning rate to TensorBoard (None without a writer)."""
    if writer is None:
        return None

    def log_step(global_step: int, loss: float, parts: dict[str, torch.Tensor], lr: float) -> None:
        writer.add_scalar("train/loss", loss, global_step)
        for name, value in parts.items():
            writer.add_scalar(f"train/{name}", float(value), global_step)
        writer.add_scalar("train/lr", lr, global_step)

    return log_step


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, build, optionally resume, train; return the exit status.

    From the start, SIGUSR1 / SIGTERM (engine.stop_request) end the run after the current training step with a
    checkpoint that --resume continues from; the status is then 0, as after --stop-after-epochs.
    """
    args = resolve_args(argv)
    with StopRequest() as stop:
        process = init_process(args)
        try:
            num_classes = args.num_classes or read_num_classes(args.shards, args.train_split)
            try:
                network = build_network(args, num_classes, process.channels_last).to(process.device)
                check_model_input(network, [*args.frames, *validation_frames(args)],
                                  min(args.crop_size, args.test_crop_size or args.crop_size))
            except ValueError as error:
                raise SystemExit(f"train.py --arch {args.arch}: {error}") from error
            train_loader, val_loader = build_loaders(args, process, network)
            try:
                accumulation = accumulation_steps(args.total_batch, args.batch_size, process.world_size)
            except ValueError as error:
                raise SystemExit(str(error)) from error
            steps_per_epoch = epoch_steps(args, train_loader, accumulation)
            optimizer, scheduler, scaler, lr = build_optimization(args, network, steps_per_epoch, process,
                                                                  accumulation)
            batch_transform = batch_augmentation(args, process, num_classes)
            model = wrap_for_processes(network, process)
            progress = Progress()
            if args.resume:
                path = Path(args.output) / LAST_CHECKPOINT if args.resume == "auto" else Path(args.resume)
                progress = resume(path, network, optimizer, scheduler, scaler, process, steps_per_epoch,
                                  run_layout(args, process, steps_per_epoch, accumulation))
            settings = run_settings(args, process, lr, steps_per_epoch, accumulation)
            inference = inference_record(network.config, args.mode, args.frames, args.crop_size, args.test_resize,
                                         read_shard_facts(args.shards, args.train_split))
            criterion = make_criterion(args.mode, args.lam, args.ce_all_frames)
            fit(args, process, model, network, criterion, optimizer, scheduler, scaler, train_loader, val_loader,
                steps_per_epoch, progress, settings, inference, accumulation, batch_transform,
                stop_check=lambda: stop.agreed(process.device))
        except NonFiniteLossError as error:
            print(f"train.py: stopped: {error}", file=sys.stderr, flush=True)
            return 1
        finally:
            close_distributed()
    if process.is_main and not progress.stopped_by:
        print(f"done: best val top-1 {progress.best_top1:.2f} at epoch {progress.best_epoch}; "
              f"checkpoints in {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
