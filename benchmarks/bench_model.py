"""Training speed of plain ResNet, TSM with the naive shift, TSM with our shift, and TSM-FFN, side by side.

Every model trains (forward, loss, backward, SGD step) on the same number of frames per step, in the same precision
and memory format; the runs are interleaved (round robin, several repeats) so that machine noise hits them alike,
and each model's median frames/s is divided by plain ResNet's. On CUDA the default is bf16 autocast plus
channels_last (the setting of the H100 speed targets); on CPU it is fp32, contiguous.

    .venv/bin/python -m benchmarks.bench_model --out runs/bench            # R50, 64 px on CPU, 224 px on CUDA
    .venv/bin/python -m benchmarks.bench_model --out runs/bench --quick    # smoke run, under a minute on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from common.device import get_device
from model import build_model, distillation_loss, naive_temporal_shift, temporal_shift
from common.atomic import write_json_atomic

TSM_FRAMES = 16
FFN_FRAMES = (4, 8, 16)
FRAMES_PER_FFN_VIDEO = sum(FFN_FRAMES)
FRAME_QUANTUM = 112  # least common multiple of 16 (TSM clip) and 28 (one FFN video)
MODEL_NAMES = ("plain", "tsm_naive", "tsm", "ffn")
NUM_CLASSES = 174
DEFAULT_CPU_THREADS = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for bench_model.json")
    parser.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet34", "resnet50", "resnet101"])
    parser.add_argument("--size", type=int, default=None, help="frame height = width (default 224 CUDA, 64 CPU)")
    parser.add_argument("--frames-per-step", type=int, default=None,
                        help=f"frames per training step, a multiple of {FRAME_QUANTUM} (default 224 CUDA, 112 CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 10 CUDA, 2 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per model (default 5 CUDA, 1 CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin repeats (median taken)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: model.get_device())")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 elsewhere")
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                        help="auto: on with CUDA, off elsewhere")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (default on CPU: {DEFAULT_CPU_THREADS}; on a shared machine more "
                             "threads spin-wait on each other and the ratios become noise)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 px, 112 frames, 1 step, 1 repeat")
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace, device: torch.device) -> dict:
    """Fill the device-dependent defaults."""
    on_cuda = device.type == "cuda"
    settings = {
        "size": args.size or (32 if args.quick else (224 if on_cuda else 64)),
        "frames_per_step": args.frames_per_step or (224 if on_cuda and not args.quick else FRAME_QUANTUM),
        "steps": args.steps or (1 if args.quick else (10 if on_cuda else 2)),
        "warmup": args.warmup if args.warmup is not None else (5 if on_cuda else 1),
        "repeats": 1 if args.quick else args.repeats,
        "bf16": args.precision == "bf16" or (args.precision == "auto" and on_cuda),
        "channels_last": args.channels_last == "on" or (args.channels_last == "auto" and on_cuda),
    }
    if settings["frames_per_step"] % FRAME_QUANTUM:
        raise SystemExit(f"bench_model: --frames-per-step must be a multiple of {FRAME_QUANTUM}, "
                         f"got {settings['frames_per_step']}")
    return settings


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(name: str, arch: str, settings: dict, device: torch.device) -> Callable[[], None]:
    """A closure running one training step of model ``name`` on fixed random data."""
    frames, size = settings["frames_per_step"], settings["size"]
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    if name == "plain":
        network = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
        network = network.to(device=device, memory_format=memory_format)
    else:
        network = build_model(
            arch, NUM_CLASSES, trained_frames=FFN_FRAMES if name == "ffn" else None,
            channels_last=settings["channels_last"], shift_impl="naive" if name == "tsm_naive" else "autograd",
        ).to(device)
    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    def autocast() -> contextlib.AbstractContextManager:
        if settings["bf16"]:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if name == "ffn":
        num_videos = frames // FRAMES_PER_FFN_VIDEO
        inputs = {
            frames: torch.randn(num_videos, frames, 3, size, size, generator=generator).to(device) for frames in FFN_FRAMES
        }
    else:
        num_videos = frames // TSM_FRAMES
        inputs = torch.randn(num_videos, TSM_FRAMES, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (num_videos,), generator=generator).to(device)

    def loss_value() -> torch.Tensor:
        if name == "ffn":
            return distillation_loss(network.forward_by_frames(inputs), labels)[0]
        if name == "plain":
            flat = inputs.reshape(-1, 3, size, size).contiguous(memory_format=memory_format)
            logits = network(flat).view(num_videos, TSM_FRAMES, -1).mean(dim=1)
            return torch.nn.functional.cross_entropy(logits, labels)
        return torch.nn.functional.cross_entropy(network(inputs), labels)

    def step() -> None:
        with autocast():
            loss = loss_value()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(step: Callable[[], None], count: int, device: torch.device) -> float:
    """Wall seconds for ``count`` steps."""
    return time_steps_wall_and_cpu(step, count, device)[0]


def time_steps_wall_and_cpu(step: Callable[[], None], count: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ``count`` steps.

    On a CPU shared with other jobs the wall time depends on their load; the process CPU time (all threads) is
    the work the step itself needed, so CPU ratios are also computed from it.
    """
    synchronize(device)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        step()
    synchronize(device)
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


def shift_micro_benchmark(settings: dict, device: torch.device, repeats: int) -> dict:
    """Forward + backward of the shift alone on a layer1-sized tensor: naive vs autograd Function."""
    side = max(settings["size"] // 4, 1)
    shape = (settings["frames_per_step"], 256, side, side)
    dtype = torch.bfloat16 if settings["bf16"] else torch.float32
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    frames = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    frames.requires_grad_(True)
    upstream = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    seconds = {}
    for label, function in (("naive", naive_temporal_shift), ("autograd", temporal_shift)):
        def run(function=function) -> None:
            function(frames, TSM_FRAMES).backward(upstream)
        run()
        seconds[label] = min(time_steps(run, 5, device) / 5 for _ in range(repeats))
    return {"shape": list(shape), "seconds_naive": seconds["naive"], "seconds_autograd": seconds["autograd"],
            "speedup": seconds["naive"] / seconds["autograd"]}


def machine_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write ``--out/bench_model.json`` and return the figures.

    The CPU thread count and cuDNN's benchmark flag are set for the run and restored afterwards (callers such as
    gpu_check import this).
    """
    args = parse_args(argv)
    device = get_device(args.device)
    previous_threads, previous_cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or DEFAULT_CPU_THREADS)
    torch.backends.cudnn.benchmark = True  # fixed shapes per model: let cuDNN pick its fastest kernels (as TSM does)
    try:
        result = run_benchmark(args, device)
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_cudnn_benchmark
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "bench_model.json", result)
    return result


def run_benchmark(args: argparse.Namespace, device: torch.device) -> dict:
    """Time every model side by side; return the result dict."""
    settings = resolve_settings(args, device)
    steps = {name: make_step(name, args.arch, settings, device) for name in MODEL_NAMES}
    for name, step in steps.items():
        time_steps(step, settings["warmup"], device)
    samples: dict[str, list[float]] = {name: [] for name in MODEL_NAMES}
    cpu_samples: dict[str, list[float]] = {name: [] for name in MODEL_NAMES}
    frames_timed = settings["frames_per_step"] * settings["steps"]
    for _ in range(settings["repeats"]):
        for name, step in steps.items():
            wall, cpu = time_steps_wall_and_cpu(step, settings["steps"], device)
            samples[name].append(frames_timed / wall)
            cpu_samples[name].append(frames_timed / max(cpu, 1e-9))
    throughput = {name: statistics.median(values) for name, values in samples.items()}
    cpu_throughput = {name: statistics.median(values) for name, values in cpu_samples.items()}
    result = {
        "machine": machine_label(device), "device": str(device), "torch": torch.__version__, "arch": args.arch,
        **settings, "frames_per_s": throughput, "samples_frames_per_s": samples,
        "ratio_to_plain": {name: throughput[name] / throughput["plain"] for name in MODEL_NAMES},
        "frames_per_cpu_s": cpu_throughput, "samples_frames_per_cpu_s": cpu_samples,
        "cpu_time_ratio_to_plain": {name: cpu_throughput[name] / cpu_throughput["plain"] for name in MODEL_NAMES},
        "shift_only": shift_micro_benchmark(settings, device, settings["repeats"]),
    }
    return result


def print_table(result: dict) -> None:
    precision = "bf16" if result["bf16"] else "fp32"
    layout = "channels_last" if result["channels_last"] else "contiguous"
    print(f"{result['machine']} | {result['arch']} {result['size']} px, {result['frames_per_step']} frames/step, "
          f"{precision}, {layout}")
    print(f"{'model':<12}{'frames/s':>12}{'ratio to plain':>18}{'frames/CPU-s':>16}{'CPU-time ratio':>18}")
    for name in MODEL_NAMES:
        print(f"{name:<12}{result['frames_per_s'][name]:>12.1f}{result['ratio_to_plain'][name]:>18.3f}"
              f"{result['frames_per_cpu_s'][name]:>16.1f}{result['cpu_time_ratio_to_plain'][name]:>18.3f}")
    shift = result["shift_only"]
    print(f"shift alone {tuple(shift['shape'])} fwd+bwd: naive {shift['seconds_naive'] * 1e3:.2f} ms, "
          f"autograd Function {shift['seconds_autograd'] * 1e3:.2f} ms ({shift['speedup']:.2f}x)")


if __name__ == "__main__":
    main()
