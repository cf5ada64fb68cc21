"""Pretrain a backbone on single synthetic images: the demo's stand-in for ImageNet initialisation.

The FFN paper initialises every model from ImageNet-pretrained weights. The demo's small networks get the same
treatment from this script, for any registered model the registry gives a single-image pretraining
(`model.registry.ImagePretraining`): the family's image network (TSM: the same ResNet without the temporal shift;
TEA: its Res2Net without motion excitation and temporal convolutions; SlowFast and UniFormer: their own network on
one-frame clips) learns the appearance task of ``preprocess.synthetic_images`` (shape x size x texture of one object,
no motion, no class of the video task), and the family writes it in the names of the weights its authors start
from, 3D families with every temporal kernel inflated from its centre tap. ``train.py --arch ARCH --pretrained
PATH`` then loads it through the model's ``load_pretrained``, as it loads those weights: every private norm copy of
an FFN gets the same norm, the classifier is dropped and its keys are printed.

Usage::

    python pretrain.py --output-root runs/pretrain [--arch tiny]   # prints the checkpoint path and its SHA-256

The result is cached: the checkpoint lives in ``<output-root>/<arch>-<key>/backbone.pt`` where ``key`` is a hash
of every setting (the family's inflation rule included), and a rerun with the same settings reuses it. The file is
written atomically.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.atomic import write_json_atomic
from data_pipeline.augment import Normalisation, normalisation_tensors
from engine.backbone_cache import (
    BACKBONE_FILE,
    PRETRAIN_DEFAULTS,
    RECORD_FILE,
    backbone_settings,
    cache_folder,
    file_sha256,
)
from engine.checkpoint import save_atomic
from engine.rng import seed_everything
from engine.schedule import LearningRateShape
from common.device import get_device
from model import build_optimizer
from model.interface import InputSpec
from model.registry import ImagePretraining, image_pretraining, image_pretraining_models
from preprocess.synthetic_images import APPEARANCE_CLASSES, appearance_dataset

VALIDATION_SEED_OFFSET = 1_000_003


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", type=Path, required=True, help="cache folder; one sub-folder per setting")
    parser.add_argument("--arch", default=PRETRAIN_DEFAULTS["arch"], choices=image_pretraining_models(), metavar="ARCH",
                        help=f"the registered model whose backbone to pretrain: {', '.join(image_pretraining_models())}")
    parser.add_argument("--image-size", type=int, default=PRETRAIN_DEFAULTS["image_size"])
    parser.add_argument("--images-per-class", type=int, default=PRETRAIN_DEFAULTS["images_per_class"])
    parser.add_argument("--val-images-per-class", type=int, default=PRETRAIN_DEFAULTS["val_images_per_class"])
    parser.add_argument("--epochs", type=int, default=PRETRAIN_DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=PRETRAIN_DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=PRETRAIN_DEFAULTS["lr"], help="AdamW peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=PRETRAIN_DEFAULTS["weight_decay"])
    parser.add_argument("--warmup-epochs", type=float, default=PRETRAIN_DEFAULTS["warmup_epochs"])
    parser.add_argument("--seed", type=int, default=PRETRAIN_DEFAULTS["seed"])
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return parser


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """Return every setting that changes the result (the cache key is their hash)."""
    return backbone_settings(vars(args))


def to_batch(images: np.ndarray, device: torch.device, mean: torch.Tensor, std: torch.Tensor,
             reverse_channels: bool = False) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB images -> normalised float (N, 1, 3, H, W) one-frame videos on the device.

    The arithmetic the committed demo backbone was trained with; `augment.normalise_views` rounds differently in
    the last bit on some pixels, and over 15 epochs that moves the weights (and the demo's numbers) visibly.
    `mean` and `std` are in RGB order; ``reverse_channels`` then hands a BGR model its channel order.
    """
    frames = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    frames = (frames - mean) / std
    if reverse_channels:
        frames = frames.flip(1)
    return frames.unsqueeze(1)


def normalisation_of_spec(spec: InputSpec) -> Normalisation:
    """The images' normalisation for a model's input spec (ImageNet's for TSM and TEA, 0.45 / 0.225 for SlowFast
    and UniFormer)."""
    return Normalisation(mean=spec.mean, std=spec.std, channel_order=spec.channel_order)


@torch.no_grad()
def accuracy(network: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int,
             device: torch.device, normalisation: Normalisation) -> float:
    """Top-1 (%) of the network on a set of images."""
    mean, std = normalisation_tensors(device, normalisation)
    network.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = network(to_batch(images[start:start + batch_size], device, mean, std,
                                  normalisation.reversed_channels))
        correct += int(logits.argmax(dim=1).cpu().eq(torch.from_numpy(labels[start:start + batch_size])).sum())
    return 100.0 * correct / max(len(images), 1)


def train_backbone(args: argparse.Namespace, pretraining: ImagePretraining,
                   device: torch.device) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Train the family's image network on the appearance task; return it and the per-epoch history."""
    seed_everything(args.seed)
    size = args.image_size
    train_images, train_labels = appearance_dataset(args.images_per_class, args.seed, size, size)
    val_images, val_labels = appearance_dataset(args.val_images_per_class, args.seed + VALIDATION_SEED_OFFSET,
                                                size, size)
    network = pretraining.build(len(APPEARANCE_CLASSES)).to(device)
    normalisation = normalisation_of_spec(pretraining.input_spec)
    steps_per_epoch = max(1, len(train_images) // args.batch_size)
    optimizer = build_optimizer(network, args.lr, 0.9, args.weight_decay, False, optimizer="adamw")
    schedule = LearningRateShape("cosine", steps_per_epoch, args.epochs, args.warmup_epochs, [])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    mean, std = normalisation_tensors(device, normalisation)
    generator = np.random.default_rng(args.seed)
    history: list[dict[str, Any]] = []
    step = 0
    for epoch in range(args.epochs):
        network.train()
        order = generator.permutation(len(train_images))
        start, loss_sum = time.perf_counter(), 0.0
        for batch_index in range(steps_per_epoch):
            chosen = order[batch_index * args.batch_size:(batch_index + 1) * args.batch_size]
            logits = network(to_batch(train_images[chosen], device, mean, std, normalisation.reversed_channels))
            loss = F.cross_entropy(logits, torch.from_numpy(train_labels[chosen]).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
            step += 1
            if args.max_steps is not None and step >= args.max_steps:
                break
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(batch_index + 1, 1),
                  "val_top1": accuracy(network, val_images, val_labels, 4 * args.batch_size, device, normalisation),
                  "epoch_s": time.perf_counter() - start}
        history.append(record)
        print(f"pretrain epoch {epoch + 1}/{args.epochs} loss {record['train_loss']:.4f} "
              f"val top1 {record['val_top1']:.2f} {record['epoch_s']:.1f} s", flush=True)
        if args.max_steps is not None and step >= args.max_steps:
            break
    return network, history


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (imports and the image set included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pretrain(args: argparse.Namespace) -> Path:
    """Return the cached backbone for these settings, training and saving it first when it is not there."""
    try:
        settings = settings_of(args)
    except ValueError as error:
        raise SystemExit(f"pretrain.py: {error}") from error
    pretraining = image_pretraining(args.arch)
    folder = cache_folder(args.output_root, settings)
    path = folder / BACKBONE_FILE
    record_path = folder / RECORD_FILE
    if path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("settings") == settings and record.get("sha256") == file_sha256(path):
            print(f"pretrain: reusing {path} (sha256 {record['sha256']})", flush=True)
            return path
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = get_device(args.device)
    except ValueError as error:
        raise SystemExit(f"pretrain.py: {error}") from error
    begin = time.perf_counter()
    network, history = train_backbone(args, pretraining, device)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": pretraining.export(network.cpu()), "arch": args.arch,
               "classes": settings["classes"], "settings": settings,
               "history": [{key: value for key, value in row.items() if key != "epoch_s"} for row in history]}
    save_atomic(payload, path)
    record = {"settings": settings, "sha256": file_sha256(path), "history": history,
              "val_top1": history[-1]["val_top1"] if history else None,
              "train_s": round(time.perf_counter() - begin, 1), "cpu_s": round(process_cpu_seconds(), 1),
              "device": str(device)}
    write_json_atomic(record_path, record)
    print(f"pretrain: wrote {path} (sha256 {record['sha256']}, val top-1 {record['val_top1']:.2f}, "
          f"{record['train_s']:.0f} s)", flush=True)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    pretrain(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
