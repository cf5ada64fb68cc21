"""What a frame count costs: multiply-adds per video (torch's FLOP counter) and the measured latency per video.

Multiply-adds are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the real network, run once on a
single input of meta tensors (the network's own parameters are swapped for meta tensors of the same shapes through
``torch.func.functional_call``, so counting costs no arithmetic and no memory). The counter counts 2 FLOPs per
multiply-add of its matmul / convolution formulas; the figures here are multiply-adds (its total / 2), the unit of
the TSM and FFN papers (their "GFLOPs"). Elementwise operations (BatchNorm, ReLU, pooling, the temporal shift) are
not counted, as in the papers.

Latency is the wall time of one forward of one video, as evaluate.py feeds it: a batch of one video, all its
views ((views, T, 3, crop, crop)), on the evaluation device and precision, after warm-up passes, median of the
timed passes; CUDA and MPS are synchronised before and after each pass. Decoding, data loading and the host to
device copy are not included.

``python -m engine.cost --arch resnet50 --frames 8 16 --crop-size 224`` prints the multiply-adds of a registered model
and of its FFN (no checkpoint needed) and, where the family folds a Weight Alteration, its share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from engine.precision import autocast_context
from model.ffn_parts import WeightAlteration, weight_alteration_modules

FLOPS_PER_MULTIPLY_ADD = 2
GIGA = 1e9
GFLOPS_DECIMALS = 6
LATENCY_DECIMALS = 3
LATENCY_WARMUP_RUNS = 2
DEFAULT_LATENCY_RUNS = 5
LATENCY_SEED = 0
MS_PER_S = 1000.0
META = torch.device("meta")
CONVOLUTION_BY_DIMS = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}
GFLOPS_PROTOCOL = ("multiply-adds per video in G (torch.utils.flop_counter.FlopCounterMode FLOPs / 2, counted once "
                   "on one view of one video at the evaluation crop, the network's own branch for T), times the "
                   "views (test crops x test clips)")
LATENCY_PROTOCOL = ("median wall time in ms of {runs} forward passes of one video (batch 1: all its views, "
                    "(views, T, 3, crop, crop)) after {warmup} warm-up passes, on {device} in {precision}, "
                    "synchronised; excludes decoding, loading and the copy to the device")


def meta_arguments(network: nn.Module) -> dict[str, torch.Tensor]:
    """Return {name: meta tensor} for every parameter and buffer of the network (same shapes, dtypes, layouts)."""
    tensors = {**dict(network.named_parameters()), **dict(network.named_buffers())}
    return {name: torch.empty_like(tensor, device=META) for name, tensor in tensors.items()}


def count_multiply_adds(network: nn.Module, frames: int, crop_size: int, views: int = 1) -> int:
    """Return the multiply-adds of one video at `frames` frames, counted by torch's FLOP counter on meta tensors.

    Parameters
    ----------
    network : nn.Module
        A video network taking (N, T, 3, H, W); an FFN runs the branch it uses at `frames` (``branch_for``).
    frames : int
        Frames per view (T).
    crop_size : int
        Side of the square crop.
    views : int
        Views per video (test crops x test clips); the count is that of one view times `views`.

    Returns
    -------
    int
        Multiply-adds per video (the counter's FLOPs / 2).
    """
    counter = FlopCounterMode(display=False)
    single_view = torch.empty(1, frames, 3, crop_size, crop_size, device=META)
    with counter, torch.no_grad():
        functional_call(network, meta_arguments(network), (single_view,))
    return views * counter.get_total_flops() // FLOPS_PER_MULTIPLY_ADD


def weight_alteration_share(network: nn.Module, frames: int, crop_size: int) -> float | None:
    """Return the multiply-adds the paper's form of the Weight Alteration adds, as a share of the whole network.

    The paper applies a depthwise 1x1 conv to each block's shifted input (s + wa(s): C x H x W multiply-adds per
    frame and block; SlowFast: C x T x H x W per block of each pathway). TSM's and SlowFast's blocks
    (``FOLDS_WEIGHT_ALTERATION``) fold it into their first convolution's weights instead (that convolution of the
    input scaled per channel by 1 + w: a product of the small weight tensor, which the counter does not count), so
    the FLOP counter gives FFN the same figure as the vanilla model; this share bounds the difference. It is
    counted by the same counter, running each
    block's Weight Alteration conv on the block's input during one counted forward.

    Returns
    -------
    float or None
        (network + the Weight Alteration convs) / network - 1, or None for a network without folded Weight
        Alteration (families that run it as a convolution are counted with it already).
    """
    blocks = [module for module in network.modules()
              if getattr(module, "FOLDS_WEIGHT_ALTERATION", False) and isinstance(module.wa, WeightAlteration)]
    if not blocks:
        return None

    def run_weight_alteration(block: nn.Module, inputs: tuple[Any, ...]) -> None:
        conv = block.wa.active_conv()
        convolution = CONVOLUTION_BY_DIMS[block.wa.dims]
        convolution(inputs[0], torch.empty_like(conv.weight, device=META), groups=conv.groups)

    base = count_multiply_adds(network, frames, crop_size)
    handles = [block.register_forward_pre_hook(run_weight_alteration) for block in blocks]
    try:
        with_alteration = count_multiply_adds(network, frames, crop_size)
    finally:
        for handle in handles:
            handle.remove()
    return with_alteration / base - 1.0


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.no_grad()
def timed_forward(network: nn.Module, inputs: torch.Tensor, device: torch.device,
                  precision: str) -> tuple[Any, float]:
    """Run the network once on inputs already on the device; return (its output, seconds of the forward alone).

    The clock starts after the device has finished all queued work and stops when the forward's work is done
    (synchronised on CUDA and MPS): decoding, the transform and the copy to the device are not in it.
    """
    synchronize(device)
    start = time.perf_counter()
    with autocast_context(precision, device):
        output = network(inputs)
    synchronize(device)
    return output, time.perf_counter() - start


def median_forward(network: nn.Module, inputs: torch.Tensor, device: torch.device, precision: str,
                   runs: int = DEFAULT_LATENCY_RUNS, warmup: int = LATENCY_WARMUP_RUNS) -> tuple[Any, float]:
    """Run `warmup` untimed then `runs` timed forwards (`timed_forward`); return (first timed output, median s)."""
    if runs < 1:
        raise ValueError(f"latency needs at least one timed run, got {runs}")
    for _ in range(warmup):
        timed_forward(network, inputs, device, precision)
    timed = [timed_forward(network, inputs, device, precision) for _ in range(runs)]
    return timed[0][0], statistics.median(seconds for _, seconds in timed)


def measure_latency_ms(network: nn.Module, frames: int, crop_size: int, views: int, device: torch.device,
                       precision: str, runs: int = DEFAULT_LATENCY_RUNS,
                       warmup: int = LATENCY_WARMUP_RUNS) -> float:
    """Return the median forward time in ms of one video ((views, T, 3, crop, crop)) after `warmup` passes.

    The passes are `median_forward`'s. The input is drawn from a private generator, so the global random state is
    left as it was.
    """
    generator = torch.Generator().manual_seed(LATENCY_SEED)
    video = torch.randn(views, frames, 3, crop_size, crop_size, generator=generator).to(device)
    network.eval()
    return MS_PER_S * median_forward(network, video, device, precision, runs, warmup)[1]


def measure_costs(networks: dict[str, nn.Module], eval_frames: Sequence[int], crop_size: int, views: int,
                  device: torch.device, precision: str,
                  latency_runs: int = DEFAULT_LATENCY_RUNS) -> dict[str, dict[str, dict[str, float | None]]]:
    """Return {name: {"gflops": {"T": G}, "latency_ms": {"T": ms or None}}} for every network and frame count.

    GFLOPs (multiply-adds, see the module docstring) are counted once per (network, T) on meta tensors; latency
    is measured when `latency_runs` > 0 (None otherwise).
    """
    costs: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, network in networks.items():
        gflops: dict[str, float | None] = {}
        latency: dict[str, float | None] = {}
        for frames in eval_frames:
            gflops[str(frames)] = round(count_multiply_adds(network, frames, crop_size, views) / GIGA,
                                        GFLOPS_DECIMALS)
            latency[str(frames)] = None
            if latency_runs > 0:
                milliseconds = measure_latency_ms(network, frames, crop_size, views, device, precision, latency_runs)
                latency[str(frames)] = round(milliseconds, LATENCY_DECIMALS)
        costs[name] = {"gflops": gflops, "latency_ms": latency}
    return costs


def cost_settings(networks: dict[str, nn.Module], frames: Sequence[int], crop_size: int, views: int,
                  device: torch.device, precision: str, latency_runs: int) -> dict[str, Any]:
    """Return the JSON settings that say what "gflops" and "latency_ms" measure (and the Weight Alteration share).

    ``weight_alteration_share`` maps each network with a Weight Alteration to the share of multiply-adds the
    paper's (unfolded) form would add at the first frame count (the share does not depend on T).
    """
    shares = {name: weight_alteration_share(network, frames[0], crop_size) for name, network in networks.items()}
    latency = None
    if latency_runs > 0:
        latency = LATENCY_PROTOCOL.format(runs=latency_runs, warmup=LATENCY_WARMUP_RUNS, device=device,
                                          precision=precision)
    return {
        "gflops": GFLOPS_PROTOCOL, "views_per_video": views, "latency_ms": latency or "not measured (--no-latency)",
        "weight_alteration_share": {name: round(share, 6) for name, share in shares.items() if share is not None},
    }


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m engine.cost``."""
    parser = argparse.ArgumentParser(
        description="Multiply-adds per video of a model and its FFN (torch's FLOP counter)")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--views", type=int, default=1, help="test crops x test clips")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of the head (or give --shards)")
    parser.add_argument("--shards", type=Path, default=None, help="take the class count from this train manifest")
    parser.add_argument("--trained-frames", type=int, nargs="+", default=[4, 8, 16], help="the FFN's branches")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print one line per frame count: the vanilla model's and the FFN's multiply-adds per video (and the share of
    a folded Weight Alteration, where the family has one)."""
    from model import build_model, model_family

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_classes is None and args.shards is None:
        parser.error("give the head's class count: --num-classes N, or --shards S (its train manifest's count)")
    if args.num_classes is None:
        from engine.data import read_num_classes

        args.num_classes = read_num_classes(args.shards, "train")
    vanilla = build_model(arch=args.arch, num_classes=args.num_classes).eval()
    ffn = build_model(arch=args.arch, num_classes=args.num_classes, trained_frames=args.trained_frames).eval()
    vanilla_name = model_family(args.arch).upper()
    print(f"{args.arch}, {args.crop_size} px, {args.views} view(s) per video: multiply-adds (G) per video")
    for frames in args.frames:
        vanilla_gflops = count_multiply_adds(vanilla, frames, args.crop_size, args.views) / GIGA
        ffn_gflops = count_multiply_adds(ffn, frames, args.crop_size, args.views) / GIGA
        line = (f"  {frames:3d}F  {vanilla_name} {vanilla_gflops:9.4g}  FFN {ffn_gflops:9.4g} "
                f"(branch {ffn.branch_for(frames)})")
        share = weight_alteration_share(ffn, frames, args.crop_size)
        if share is not None:
            line += f"  Weight Alteration in the paper's form: +{100 * share:.3f}%"
        elif weight_alteration_modules(ffn):  # run as a convolution: already in the count
            line += "  Weight Alteration counted"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
