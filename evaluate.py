"""Evaluate checkpoints at any frame count: a table (checkpoint x frames, top-1 / top-5), a JSON and a PNG.

Usage::

    python evaluate.py --checkpoints runs/tsm16/best.pt runs/ffn/best.pt --frames 2 4 6 8 10 12 14 16 \\
        --shards database/shards --output runs/eval

A checkpoint is ours (train.py's ``last.pt`` / ``best.pt``) or an official TSM / TSM-FFN file (read through
model/'s loader). ``NAME=PATH`` names a checkpoint in the table and the JSON. An FFN evaluated at T frames uses
its nearest trained branch (ties to the larger); the temporal shift always uses the actual T. The default protocol
is FFN's: 1 clip x 1 centre crop 224 of the frame resized to short side 256. TSM's test script adds
``--test-crops 3`` (GroupFullResSample), ``--test-clips 2`` (twice_sample) and ``--full-res`` (256 x 256 crops),
with ``--short-video segments`` (its indices for short videos); see docs/evaluation_protocols.md. All models and
frame counts are evaluated in one pass over the data (one pass per input normalisation when the models' families
normalise their frames differently). Runs under torchrun too (each video once across ranks).

Each model and frame count also gets its cost (engine/cost.py): ``gflops``, multiply-adds per video in G counted by
torch's FLOP counter on the network (one view, times the views), and ``latency_ms``, the median forward time of
one video on the evaluation device after warm-up (``--no-latency`` skips it: null).

JSON (``<output>/<tag>.json``)::

    {"settings": {...}, "models": {NAME: {"trained_frames": [...], "top1": {"2": ..}, "top5": {..},
                                          "gflops": {"2": ..}, "latency_ms": {"2": ..},
                                          "split": "validation", "n": ..., "checkpoint": path}}}

top-1 and top-5 are percentages.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.atomic import write_json_atomic
from data_pipeline import add_loader_arguments, loader_options
from data_pipeline.augment import DEFAULT_CROP_SIZE, default_test_resize
from engine.cost import DEFAULT_LATENCY_RUNS, cost_settings, measure_costs
from engine.data import check_model_input, make_loader, normalisation_of, read_shard_facts
from common.distributed import close_distributed, init_distributed
from engine.evaluation import evaluate_networks
from engine.inference import load_network
from engine.precision import CHANNELS_LAST_CHOICES, PRECISIONS, resolve_channels_last, resolve_precision
from engine.reporting import format_table, plot_top1

DEFAULT_FRAMES = (2, 4, 6, 8, 10, 12, 14, 16)
DEFAULT_TAG = "eval"
# Loader options with an evaluation flag (the crop's default comes from the training run's test crop, else its
# crop, else 224).
LOADER_FLAGS = ("num_workers", "decode", "tar_reader", "short_video", "sampling", "crop_size", "test_resize",
                "test_crops", "test_clips", "test_crop_layout")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, help="PATH or NAME=PATH, one or more")
    parser.add_argument("--frames", type=int, nargs="+", default=list(DEFAULT_FRAMES))
    parser.add_argument("--shards", type=Path, required=True, help="folder with <split>.manifest.json and tars")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--output", type=Path, required=True, help="folder for <tag>.json and <tag>.png")
    parser.add_argument("--tag", default=DEFAULT_TAG, help="file name stem of the JSON and the PNG")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per batch per process")
    add_loader_arguments(parser, LOADER_FLAGS, defaults={"crop_size": None})
    parser.add_argument("--full-res", action="store_true",
                        help="crops as large as the test resize (256 x 256 for 224), as TSM's --full_res")
    parser.add_argument("--arch", default=None, help="official checkpoints: the model, when not the one the file's "
                        "layout gives (e.g. another backbone depth of the same family)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow full unpickling of a checkpoint the safe loader refuses (trusted files only)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--channels-last", choices=CHANNELS_LAST_CHOICES, default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--title", default=None, help="plot title")
    parser.add_argument("--no-latency", action="store_true",
                        help="skip the latency per video (GFLOPs are always counted)")
    parser.add_argument("--latency-runs", type=int, default=DEFAULT_LATENCY_RUNS,
                        help="timed forward passes per model and frame count (the median is reported)")
    return parser


def split_named_path(entry: str) -> tuple[str, Path]:
    """Return (name, path) for ``NAME=PATH`` or ``PATH`` (name: the run folder for last.pt/best.pt, else stem)."""
    if "=" in entry:
        name, path = entry.split("=", 1)
        return name, Path(path)
    path = Path(entry)
    name = path.parent.name if path.stem in ("best", "last") and path.parent.name else path.stem
    return name, path


def full_res_sizes(crop_size: int, test_resize: int | None) -> tuple[int, int]:
    """Return (crop, resize) of TSM's ``--full_res``: crops as large as the resized short side (256 for 224)."""
    resize = test_resize or default_test_resize(crop_size)
    return resize, resize


def check_class_count(networks: dict[str, nn.Module], paths: dict[str, Path], shards: Path, split: str) -> None:
    """Stop with one line when a model's class count is not the one the split's manifest records."""
    recorded = read_shard_facts(shards, split)["num_classes"]
    for name, network in networks.items():
        outputs = int(network.config["num_classes"])
        if recorded is not None and outputs != recorded:
            raise SystemExit(f"{paths[name]}: {outputs} classes, but the {split} shards in {shards} have {recorded}; "
                             "evaluate a model on the dataset it was trained on")


def settings_default(all_settings: list[dict[str, Any]], key: str, fallback: Any) -> Any:
    """Return the first recorded training setting `key`, or the fallback."""
    for settings in all_settings:
        if settings.get(key) is not None:
            return settings[key]
    return fallback


def group_by_normalisation(networks: dict[str, nn.Module]) -> dict[Any, list[str]]:
    """Network names grouped by the input normalisation they need (one pass over the data per group)."""
    groups: dict[Any, list[str]] = {}
    for name, network in networks.items():
        groups.setdefault(normalisation_of(network), []).append(name)
    return groups


def model_entry(network: nn.Module, settings: dict[str, Any], frames: Sequence[int],
                per_count: dict[int, dict[str, float]], split: str, checkpoint: Path) -> dict[str, Any]:
    """Return one model's JSON entry (trained frames: the FFN branches, else the training run's --frames)."""
    trained = getattr(network, "trained_frames", None) or settings.get("frames") or []
    return {
        "trained_frames": [int(count) for count in trained],
        "top1": {str(count): round(per_count[count]["top1"], 4) for count in frames},
        "top5": {str(count): round(per_count[count]["top5"], 4) for count in frames},
        "split": split,
        "n": int(per_count[frames[0]]["n"]),
        "checkpoint": str(checkpoint),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate every checkpoint at every frame count; write the JSON and PNG on rank 0; return the JSON."""
    device, rank, world_size = init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    precision = resolve_precision(args.precision, device)
    channels_last = resolve_channels_last(args.channels_last, device)
    named = [split_named_path(entry) for entry in args.checkpoints]
    networks, paths, all_settings = {}, {}, []
    settings_by_name: dict[str, dict[str, Any]] = {}
    for name, path in named:
        if name in networks:
            raise SystemExit(f"{path}: the name {name!r} is used twice; name them NAME=PATH")
        network, settings = load_network(path, args.arch, channels_last, args.trust_pickle)
        networks[name], paths[name], settings_by_name[name] = network.to(device), path, settings
        all_settings.append(settings)
    check_class_count(networks, paths, args.shards, args.split)
    args.crop_size = (args.crop_size or settings_default(all_settings, "test_crop_size", None)
                      or settings_default(all_settings, "crop_size", DEFAULT_CROP_SIZE))
    if args.test_resize is None:
        args.test_resize = settings_default(all_settings, "test_resize", None)
    if args.full_res:
        args.crop_size, args.test_resize = full_res_sizes(args.crop_size, args.test_resize)
    frames = sorted(set(args.frames))
    for name, network in networks.items():
        try:
            check_model_input(network, frames, args.crop_size)
        except ValueError as error:
            raise SystemExit(f"{paths[name]}: {error}") from error
    start = time.perf_counter()
    results: dict[str, Any] = {}
    for normalisation, names in group_by_normalisation(networks).items():
        loader = make_loader(args.shards, args.split, frames=tuple(frames), batch_size=args.batch_size, train=False,
                             device=device, rank=rank, world_size=world_size, seed=args.seed,
                             normalisation=normalisation, **loader_options(args, LOADER_FLAGS))
        results.update(evaluate_networks({name: networks[name] for name in names}, loader, frames, device,
                                         precision))
    seconds = time.perf_counter() - start
    views = args.test_crops * args.test_clips
    latency_runs = 0 if args.no_latency or rank != 0 else args.latency_runs
    costs = measure_costs(networks, frames, args.crop_size, views, device, precision, latency_runs)
    report = {
        "settings": {
            "split": args.split, "frames": frames, "shards": str(args.shards), "crop_size": args.crop_size,
            "test_resize": args.test_resize, "test_crops": args.test_crops, "test_clips": args.test_clips,
            "test_crop_layout": args.test_crop_layout, "sampling": args.sampling,
            "full_res": args.full_res, "short_video": args.short_video,
            "batch_size": args.batch_size, "precision": precision, "device": str(device),
            "world_size": world_size, "seconds": round(seconds, 2),
            "checkpoints": {name: str(path) for name, path in paths.items()},
            "cost": cost_settings(networks, frames, args.crop_size, views, device, precision, latency_runs),
        },
        "models": {name: {**model_entry(networks[name], settings_by_name[name], frames, results[name], args.split,
                                        paths[name]), **costs[name]}
                   for name in networks},
    }
    if rank == 0:
        args.output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.output / f"{args.tag}.json", report)
        title = args.title or f"top-1 against frames ({args.split}, {report['models'][named[0][0]]['n']} videos)"
        plot_top1(report["models"], frames, args.output / f"{args.tag}.png", title)
        print(format_table(report["models"], frames))
        print("\nGFLOPs (multiply-adds) / latency (ms) per video")
        print(format_table(report["models"], frames, key="gflops", second="latency_ms", number_format=".4g"))
        print(f"wrote {args.output / (args.tag + '.json')} and {args.output / (args.tag + '.png')} "
              f"({seconds:.1f} s)", flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    finally:
        close_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
