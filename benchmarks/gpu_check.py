"""GPU proof in one command: DALI and the whole training path on one H100/H200, every figure in one JSON.

    python3 -m benchmarks.gpu_check --out $OUT/gpu_check.json            # on the GPU machine, about 4 min
    .venv/bin/python -m benchmarks.gpu_check --out runs/gpu --smoke      # CPU smoke run, toy sizes

It makes its own data (numpy + Pillow, no ffmpeg: ``benchmarks.gpu_check_data``), then runs the sections below,
each under a share of ``--budget-s`` (default 220 s). The JSON (and a Markdown table beside it) is rewritten after
every section, so a run cut off by a timeout still reports what it did.

0. environment: device, driver, CUDA, torch / torchvision / DALI / webdataset / Python versions, date, CPUs;
   then the shards: textured 427x240 throughput shards and small synthetic temporal shards;
1. parity: the torchvision and dali backends against the cpu backend on the same samples and crop boxes (mean
   and max absolute difference on the 0-255 scale); the model's CUDA fp32 logits (TF32 off) against CPU logits
   (relative L2);
2. decode: decode + augment frames/s of every backend into the training layout;
3. loader_training: TSM-FFN (4+8+16, batch 8) training frames/s with one batch already on the GPU, then with the
   real loader of each backend; data stall = 1 - real / in-GPU;
4. model_speed: plain ResNet-50, naive TSM, our TSM and TSM-FFN side by side (``benchmarks.bench_model``), bf16
   and fp32, channels_last;
5. memory: peak GPU memory of TSM-FFN training at 8 and 16 videos per GPU;
6. short_training: a short real training of TSM-FFN on the temporal shards, held-out accuracy against chance.

Without CUDA (or with ``--smoke``) every section runs at toy sizes (tiny network, small frames; the GPU backends
run on the CPU where they can: torchvision's CPU decoder, DALI's CPU mode) and CUDA-only parts are recorded as
skipped with the reason. Targets are judged only in a full CUDA run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import math
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

PROCESS_STARTED = time.perf_counter()  # the budget counts from here, before the heavy imports below

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.gpu_check_data import ThroughputSpec, make_temporal_shards, make_throughput_shards  # noqa: E402
from model import build_model, distillation_loss, get_device  # noqa: E402
from preprocess.shard_format import atomic_file, write_json_atomic  # noqa: E402

DEFAULT_BUDGET_S = 220.0
REFERENCE_BUDGET_S = 220.0
MIN_SECTION_S = 4.0
NUM_CLASSES = 174
FFN_RATES = (4, 8, 16)
JSON_NAME = "gpu_check.json"
V100_32GB_MIB = 32510  # what nvidia-smi reports for a 32 GB V100 (the official run: 16 videos per such GPU)
SECTION_WEIGHTS = {
    "shards": 0.07,
    "parity": 0.05,
    "decode": 0.12,
    "loader_training": 0.26,
    "model_speed": 0.17,
    "memory": 0.05,
    "short_training": 0.28,
}
BACKENDS = ("dali", "torchvision", "cpu")
FFMPEG_MODULES = ("ffmpeg", "imageio_ffmpeg")
ERROR_LINES = 12
WARMUP_STEPS = 3
MIN_TIMED_STEPS = 2
# Rough seconds per training step of the four bench_model networks together (224 frames, H100), to size its run.
BENCH_STEP_S = {"bf16": 0.4, "fp32": 1.0}


class SectionSkipped(RuntimeError):
    """Raised by a section that cannot run here; the message is the reason recorded in the JSON."""


# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------


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

    def need_shards(self, kind: str) -> Path:
        """Return the folder of shards `kind`, or skip the section when they were not made."""
        if kind not in self.shards:
            raise SectionSkipped(f"the {kind} shards were not made (see section shards)")
        return self.shards[kind]


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when asked, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """Turn TF32 off for CUDA matmuls and convolutions, restoring the previous flags afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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


def dali_version() -> str | None:
    """nvidia.dali's version, or None when it does not import."""
    try:
        import nvidia.dali
    except ImportError:
        return None
    return str(nvidia.dali.__version__)


def lookup(tree: dict[str, Any], path: str) -> Any:
    """Return tree[a][b][c] for path "a.b.c", or None when any key is missing."""
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def ffn_frames_per_video(rates: Sequence[int]) -> int:
    """Frames one FFN training video feeds the network (4 + 8 + 16 = 28)."""
    return int(sum(rates))


# ----------------------------------------------------------------------------------------------------------------
# Section 0: environment
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Shards
# ----------------------------------------------------------------------------------------------------------------


def section_shards(context: Context, seconds: float) -> dict[str, Any]:
    """Make the throughput shards and the temporal shards (numpy + Pillow, forked processes)."""
    sizes = context.sizes
    spec = ThroughputSpec(
        num_videos=sizes.num_videos, min_frames=sizes.min_frames, max_frames=sizes.max_frames,
        width=sizes.frame_width, height=sizes.frame_height, pool_clips=sizes.pool_clips,
        num_shards=sizes.num_shards, seed=context.seed,
    )  # fmt: skip
    workers = max(1, os.cpu_count() or 1) if not context.smoke else 1
    throughput_dir = context.work / "throughput"
    throughput = make_throughput_shards(throughput_dir, spec, workers)
    context.shards["throughput"] = throughput_dir
    temporal_dir = context.work / "temporal"
    temporal = make_temporal_shards(
        temporal_dir, sizes.temporal_videos_per_class, sizes.temporal_size, seed=context.seed, workers=workers
    )
    context.shards["temporal"] = temporal_dir
    context.temporal_classes = int(temporal["classes"])
    return {"throughput": throughput, "temporal": temporal, "folder": str(context.work)}


# ----------------------------------------------------------------------------------------------------------------
# Backends on identical samples (sections 1 and 2)
# ----------------------------------------------------------------------------------------------------------------


def select_samples(shards: Path, count: int, crop: int, seed: int, rates: Sequence[int] = FFN_RATES) -> list[Any]:
    """Read `count` videos of the train split and sample frames and crop boxes as the loader workers do."""
    from data_pipeline.loader import PipelineConfig, select_sample
    from data_pipeline.stream import iterate_tar, read_split

    config = PipelineConfig(
        rates=tuple(rates), batch_size=count, train=True, decode_in_worker=False, crop_size=crop, seed=seed
    )
    rng = np.random.default_rng([seed, 0x5E1])
    samples: list[Any] = []
    for entry in read_split(shards, "train"):
        for raw in iterate_tar(entry.path):
            samples.append(select_sample(raw, entry.path, config, rng))
            if len(samples) == count:
                return samples
    return samples


def backend_device(backend: str, context: Context) -> torch.device | None:
    """Where a backend runs here: the CUDA device, the CPU for the cpu backend and in smoke runs, else None."""
    if backend == "cpu":
        return torch.device("cpu")
    if backend == "dali" and dali_version() is None:
        return None
    if context.on_cuda:
        return context.device
    return torch.device("cpu") if context.smoke else None


def backend_unavailable_reason(backend: str) -> str:
    """Why a GPU backend cannot run here."""
    if backend == "dali" and dali_version() is None:
        return "nvidia.dali does not import (unpack the .gpusite parts, see scripts/gpu_check.sh)"
    return "needs CUDA"


class BatchDecoder:
    """One backend turning a list of selected samples into a batch in the training layout."""

    def __init__(self, backend: str, device: torch.device, max_frames: int) -> None:
        from data_pipeline.augment import normalisation_tensors
        from data_pipeline.decode import DaliDecoder, TorchvisionDecoder

        self.backend = backend
        self.device = device
        self.mean, self.std = normalisation_tensors()
        self.decoder: Any = None
        if backend == "torchvision":
            self.decoder = TorchvisionDecoder(device)
        elif backend == "dali":
            self.decoder = DaliDecoder(device, max_frames=max_frames)

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        """Decode, augment and collate `samples`: {"frames": {T: (B, T, 3, S, S)}, "label", "id", "views"}.

        The loader's own batch path (`decode_batch`: straight into the preallocated batch), so the timings are the
        training path's.
        """
        from data_pipeline.decode import decode_batch

        if self.decoder is None:
            return decode_batch(samples, self.mean, self.std)[0]
        return self.decoder.decode_batch(samples)[0]


def differences_255(reference: dict[int, torch.Tensor], other: dict[int, torch.Tensor]) -> dict[str, float]:
    """Mean and max absolute difference of two batches' normalised frames, on the 0-255 pixel scale."""
    from data_pipeline.augment import IMAGENET_STD

    scale = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0
    gaps = torch.cat(
        [((reference[rate].float().cpu() - other[rate].float().cpu()).abs() * scale).flatten() for rate in reference]
    )
    return {"mean_abs_255": gaps.mean().item(), "max_abs_255": gaps.max().item(), "values": int(gaps.numel())}


def backend_parity(context: Context) -> dict[str, Any]:
    """torchvision and dali against the cpu backend on the same samples and crop boxes."""
    sizes = context.sizes
    samples = select_samples(context.need_shards("throughput"), sizes.parity_videos, sizes.crop, context.seed)
    max_frames = len(samples) * ffn_frames_per_video(FFN_RATES)
    reference = BatchDecoder("cpu", torch.device("cpu"), max_frames)(samples)["frames"]
    results: dict[str, Any] = {"videos": len(samples), "crop": sizes.crop}
    for backend in ("torchvision", "dali"):
        device = backend_device(backend, context)
        if device is None:
            results[backend] = {"status": "skipped", "reason": backend_unavailable_reason(backend)}
            continue

        def compare_backend(backend: str = backend, device: torch.device = device) -> dict[str, Any]:
            frames = BatchDecoder(backend, device, max_frames)(samples)["frames"]
            return {"status": "ok", "device": str(device), **differences_255(reference, frames)}

        results[backend] = guarded(compare_backend)
    return results


def model_parity(context: Context) -> dict[str, Any]:
    """TSM-FFN logits on the device in fp32 with TF32 off against CPU fp32 logits (relative L2).

    Without CUDA the stand-in compares channels_last against contiguous on the CPU (same code path, same check).
    """
    sizes = context.sizes
    torch.manual_seed(context.seed)
    reference_model = build_model(sizes.arch, NUM_CLASSES, ffn_frames=FFN_RATES).eval()
    generator = torch.Generator().manual_seed(context.seed)
    inputs = {rate: torch.randn(1, rate, 3, sizes.crop, sizes.crop, generator=generator) for rate in FFN_RATES}
    with torch.no_grad():
        reference = reference_model.forward_rates(inputs)
    if context.on_cuda:
        target_model, label = reference_model.to(context.device), f"{context.device} fp32, TF32 off"
    else:
        target_model = build_model(sizes.arch, NUM_CLASSES, ffn_frames=FFN_RATES, channels_last=True).eval()
        target_model.load_state_dict(reference_model.state_dict())
        label = "cpu channels_last (smoke stand-in for CUDA)"
    with torch.no_grad(), tf32_disabled():
        target = target_model.forward_rates({rate: video.to(context.device) for rate, video in inputs.items()})
    reference_flat = torch.cat([reference[rate].flatten() for rate in FFN_RATES]).double()
    target_flat = torch.cat([target[rate].float().cpu().flatten() for rate in FFN_RATES]).double()
    relative = ((reference_flat - target_flat).norm() / reference_flat.norm()).item()
    return {"arch": sizes.arch, "crop": sizes.crop, "compared": label, "relative_l2": relative,
            "reference_norm": reference_flat.norm().item()}  # fmt: skip


def section_parity(context: Context, seconds: float) -> dict[str, Any]:
    """Section 1: backend parity and model parity."""
    return {"backends": guarded(lambda: backend_parity(context)), "model": guarded(lambda: model_parity(context))}


def decode_rate(decoder: BatchDecoder, samples: Sequence[Any], batch: int, seconds: float) -> dict[str, Any]:
    """Decode + augment batches of `batch` videos cyclically for `seconds`; frames per second."""
    groups = [samples[start : start + batch] for start in range(0, len(samples) - batch + 1, batch)]
    if not groups:
        raise SectionSkipped(f"fewer than {batch} selected videos for the decode benchmark")
    position = {"index": 0, "decoded": 0, "videos": 0}

    def step() -> None:
        group = groups[position["index"] % len(groups)]
        decoder(group)
        position["index"] += 1
        position["decoded"] += sum(len(sample.jpegs) for sample in group)
        position["videos"] += len(group)

    for group in groups[:2]:
        decoder(group)
    position.update(index=0, decoded=0, videos=0)
    steps, elapsed = run_for(step, seconds, 1, decoder.device)
    output_frames = position["videos"] * ffn_frames_per_video(FFN_RATES)
    return {
        "batch_videos": batch, "batches": steps, "seconds": elapsed,
        "decoded_frames_per_s": position["decoded"] / elapsed, "output_frames_per_s": output_frames / elapsed,
        "videos_per_s": position["videos"] / elapsed,
    }  # fmt: skip


def section_decode(context: Context, seconds: float) -> dict[str, Any]:
    """Section 2: decode + augment frames/s of each backend into the training layout (one process)."""
    sizes = context.sizes
    samples = select_samples(context.need_shards("throughput"), sizes.decode_videos, sizes.crop, context.seed)
    plan = []
    for backend in BACKENDS:
        batches = sizes.decode_batches if backend != "cpu" else sizes.decode_batches[:1]
        plan += [(backend, batch) for batch in batches if backend_device(backend, context) is not None]
    per_run = 0.75 * seconds / max(1, len(plan))
    results: dict[str, Any] = {
        "videos_selected": len(samples),
        "mean_decoded_frames_per_video": float(np.mean([len(sample.jpegs) for sample in samples])),
        "note": "decoded = JPEGs decoded (unique frames); output = frames delivered (sum of the rates per video); "
                "the cpu backend is one process here (the loader runs it in its workers)",
    }  # fmt: skip
    for backend in BACKENDS:
        if backend_device(backend, context) is None:
            results[backend] = {"status": "skipped", "reason": backend_unavailable_reason(backend)}
    for backend, batch in plan:
        device = backend_device(backend, context)
        entry = results.setdefault(backend, {"device": str(device), "runs": {}, "status": "ok"})

        def measure(backend: str = backend, device: torch.device = device, batch: int = batch) -> dict[str, Any]:
            decoder = BatchDecoder(backend, device, batch * ffn_frames_per_video(FFN_RATES))
            return {"status": "ok", **decode_rate(decoder, samples, batch, per_run)}

        entry["runs"][str(batch)] = guarded(measure)
        if entry["runs"][str(batch)]["status"] != "ok":
            entry["status"] = "failed"
    return results


# ----------------------------------------------------------------------------------------------------------------
# Training throughput with the real loader (section 3)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Trainer:
    """A model with its optimizer and one training-step function on multi-rate batches."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    bf16: bool

    def step(self, frames: dict[int, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Forward all rates, FFN loss, backward, optimizer step; return the detached loss."""
        with autocast(self.device, self.bf16):
            logits = self.model.forward_rates(frames)
            loss, _ = distillation_loss(logits, labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def make_trainer(context: Context, arch: str, num_classes: int, learning_rate: float = 1e-3) -> Trainer:
    """TSM-FFN (4, 8, 16) training in the CUDA training setting (bf16 autocast, channels_last) or fp32 on CPU."""
    torch.manual_seed(context.seed)
    model = build_model(arch, num_classes, ffn_frames=FFN_RATES, channels_last=context.on_cuda).to(context.device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9, weight_decay=5e-4)
    return Trainer(model, optimizer, context.device, bf16=context.on_cuda)


def endless(loader: Any) -> Iterator[dict[str, Any]]:
    """Iterate a training loader over epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class LoaderFeed:
    """Feeds a trainer from a loader, one batch ahead, counting videos and the host time spent in next()."""

    def __init__(self, trainer: Trainer, loader: Any) -> None:
        self.trainer = trainer
        self.iterator = endless(loader)
        started = time.perf_counter()
        self.batch = next(self.iterator)
        self.first_batch_s = time.perf_counter() - started
        self.videos = 0
        self.wait_s = 0.0

    def step(self) -> None:
        """Train on the current batch, then fetch the next one."""
        labels = self.batch["label"].to(self.trainer.device, non_blocking=True)
        self.trainer.step(self.batch["frames"], labels)
        self.videos += len(labels)
        waited = time.perf_counter()
        self.batch = next(self.iterator)
        self.wait_s += time.perf_counter() - waited

    def reset_counts(self) -> None:
        """Forget the warm-up."""
        self.videos, self.wait_s = 0, 0.0


def loader_rate(context: Context, trainer: Trainer, loader: Any, seconds: float) -> dict[str, Any]:
    """Train from `loader` for `seconds` after warm-up; frames/s and the host time spent waiting in next()."""
    feed = LoaderFeed(trainer, loader)
    for _ in range(context.warmup_steps):
        feed.step()
    feed.reset_counts()
    steps, elapsed = run_for(feed.step, seconds, context.min_steps, trainer.device)
    feed.iterator.close()
    frames = feed.videos * ffn_frames_per_video(FFN_RATES)
    return {"steps": steps, "seconds": elapsed, "frames_per_s": frames / elapsed, "first_batch_s": feed.first_batch_s,
            "wait_in_next_s_per_step": feed.wait_s / steps}  # fmt: skip


def in_device_rate(context: Context, trainer: Trainer, batch: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Train on one batch already on the device for `seconds` after warm-up: the loader-free ceiling."""
    frames = {rate: video.to(trainer.device) for rate, video in batch["frames"].items()}
    labels = batch["label"].to(trainer.device)
    for _ in range(context.warmup_steps):
        trainer.step(frames, labels)
    steps, elapsed = run_for(lambda: trainer.step(frames, labels), seconds, context.min_steps, trainer.device)
    return {"steps": steps, "seconds": elapsed,
            "frames_per_s": steps * len(labels) * ffn_frames_per_video(FFN_RATES) / elapsed}  # fmt: skip


def section_loader_training(context: Context, seconds: float) -> dict[str, Any]:
    """Section 3: TSM-FFN training frames/s in-device vs with the real loader of each backend; data stall."""
    from data_pipeline import build_loader

    sizes = context.sizes
    shards = context.need_shards("throughput")
    trainer = make_trainer(context, sizes.arch, NUM_CLASSES)
    per_run = 0.7 * seconds / (1 + len(BACKENDS))
    samples = select_samples(shards, sizes.batch, sizes.crop, context.seed)
    batch = BatchDecoder("cpu", torch.device("cpu"), 0)(samples)
    ceiling = in_device_rate(context, trainer, batch, per_run)
    results: dict[str, Any] = {
        "arch": sizes.arch, "batch_videos": sizes.batch, "rates": list(FFN_RATES), "crop": sizes.crop,
        "bf16": trainer.bf16, "channels_last": context.on_cuda, "in_device": ceiling, "backends": {},
    }  # fmt: skip
    for backend in BACKENDS:
        if backend != "cpu" and not context.on_cuda:
            results["backends"][backend] = {"status": "skipped", "reason": "the real loader runs GPU backends on CUDA"}
            continue
        if backend == "dali" and dali_version() is None:
            results["backends"][backend] = {"status": "skipped", "reason": backend_unavailable_reason(backend)}
            continue
        workers = sizes.cpu_workers if backend == "cpu" else sizes.workers

        def measure(backend: str = backend, workers: int = workers) -> dict[str, Any]:
            loader = build_loader(
                shards, "train", FFN_RATES, sizes.batch, train=True, decode=backend, device=context.device,
                num_workers=workers, seed=context.seed, crop_size=sizes.crop,
            )  # fmt: skip
            measured = loader_rate(context, trainer, loader, per_run)
            stall = 1.0 - measured["frames_per_s"] / ceiling["frames_per_s"]
            return {"status": "ok", "workers": workers, "data_stall": stall, **measured}

        results["backends"][backend] = guarded(measure)
        gc.collect()
    return results


# ----------------------------------------------------------------------------------------------------------------
# Section 4: model speed (benchmarks.bench_model), section 5: memory
# ----------------------------------------------------------------------------------------------------------------


def bench_plan(seconds: float, smoke: bool) -> dict[str, dict[str, int]]:
    """Steps, warm-up and repeats of the bf16 and fp32 bench_model runs that fit in `seconds`."""
    if smoke:
        return {"fp32": {"steps": 1, "warmup": 0, "repeats": 1}}
    plan = {}
    for precision, share in (("bf16", 0.55), ("fp32", 0.35)):
        affordable = max(3, int(seconds * share / BENCH_STEP_S[precision]))
        warmup = min(5, max(2, affordable // 6))
        repeats = 3 if affordable - warmup >= 15 else 1
        plan[precision] = {"steps": max(1, (affordable - warmup) // repeats), "warmup": warmup, "repeats": repeats}
    return plan


def section_model_speed(context: Context, seconds: float) -> dict[str, Any]:
    """Section 4: plain ResNet, naive TSM, our TSM, TSM-FFN side by side, bf16 and fp32 (bench_model)."""
    from benchmarks import bench_model

    sizes = context.sizes
    plan = bench_plan(seconds, context.smoke)
    runs: dict[str, Any] = {}
    for precision, counts in plan.items():
        argv = [
            "--out", str(context.work / f"bench_model_{precision}"), "--arch", sizes.bench_arch,
            "--size", str(sizes.bench_size), "--frames-per-step", str(sizes.bench_frames_per_step),
            "--steps", str(counts["steps"]), "--warmup", str(counts["warmup"]), "--repeats", str(counts["repeats"]),
            "--precision", precision, "--channels-last", "on" if context.on_cuda else "off",
            "--device", str(context.device),
        ]  # fmt: skip
        runs[precision] = bench_model.main(argv)
    return summarise_model_speed(runs)


def summarise_model_speed(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Keep both bench_model runs; ratios to plain from bf16 (fp32 when bf16 did not run); bf16 / fp32 speed-ups."""
    summary: dict[str, Any] = dict(runs)
    headline = runs.get("bf16") or runs.get("fp32") or {}
    summary["ratio_to_plain"] = headline.get("ratio_to_plain")
    summary["ratio_precision"] = "bf16" if "bf16" in runs else "fp32"
    summary["fp32_tf32"] = {"convolutions": torch.backends.cudnn.allow_tf32,
                            "matmul": torch.backends.cuda.matmul.allow_tf32}  # torch's defaults, as training runs
    if "bf16" in runs and "fp32" in runs:
        summary["bf16_speedup_over_fp32"] = {
            name: runs["bf16"]["frames_per_s"][name] / runs["fp32"]["frames_per_s"][name]
            for name in runs["bf16"]["frames_per_s"]
        }
    else:
        summary["bf16_speedup_over_fp32"] = None
        summary["bf16_note"] = "smoke run: fp32 only (bf16 autocast on a CPU says nothing about the GPU)"
    return summary


def memory_at(context: Context, videos: int) -> dict[str, Any]:
    """Peak memory of TSM-FFN training steps at `videos` per GPU (bf16, channels_last, random frames)."""
    sizes = context.sizes
    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(context.device)
    context_mib = (total - free - torch.cuda.memory_reserved(context.device)) / 2**20
    torch.cuda.reset_peak_memory_stats(context.device)
    trainer = make_trainer(context, sizes.arch, NUM_CLASSES)
    frames = {
        rate: torch.randn(videos, rate, 3, sizes.crop, sizes.crop, device=context.device) for rate in FFN_RATES
    }
    labels = torch.randint(0, NUM_CLASSES, (videos,), device=context.device)
    for _ in range(3):
        trainer.step(frames, labels)
    synchronize(context.device)
    allocated = torch.cuda.max_memory_allocated(context.device) / 2**20
    reserved = torch.cuda.max_memory_reserved(context.device) / 2**20
    del trainer, frames, labels
    gc.collect()
    torch.cuda.empty_cache()
    footprint = context_mib + reserved
    return {"videos": videos, "peak_allocated_mib": allocated, "peak_reserved_mib": reserved,
            "cuda_context_mib": context_mib, "footprint_mib": footprint,
            "fits_32gb_v100": footprint <= V100_32GB_MIB}  # fmt: skip


def section_memory(context: Context, seconds: float) -> dict[str, Any]:
    """Section 5: peak GPU memory of TSM-FFN training at 8 and 16 videos per GPU."""
    if not context.on_cuda:
        raise SectionSkipped("needs CUDA (peak GPU memory)")
    return {
        "arch": context.sizes.arch, "crop": context.sizes.crop, "bf16": True, "channels_last": True,
        "v100_32gb_mib": V100_32GB_MIB,
        "batches": {
            str(videos): guarded(lambda videos=videos: {"status": "ok", **memory_at(context, videos)})
            for videos in context.sizes.memory_batches
        },
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Section 6: a short real training on the temporal shards
# ----------------------------------------------------------------------------------------------------------------

TRAIN_LR = 3e-3
TRAIN_WEIGHT_DECAY = 0.05
TRAIN_WARMUP_FRACTION = 0.1


def learning_rate_at(progress: float) -> float:
    """Linear warm-up over the first TRAIN_WARMUP_FRACTION of training, then cosine decay to zero."""
    if progress < TRAIN_WARMUP_FRACTION:
        return TRAIN_LR * max(progress, 0.01) / TRAIN_WARMUP_FRACTION
    fraction = (progress - TRAIN_WARMUP_FRACTION) / (1.0 - TRAIN_WARMUP_FRACTION)
    return TRAIN_LR * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))


def temporal_loader(context: Context, shards: Path, split: str, train: bool, batch: int) -> Any:
    """The real loader over the temporal shards (whole 32 px frames: no multi-scale crop, like the demo)."""
    from data_pipeline import build_loader

    size = context.sizes.temporal_size
    return build_loader(
        shards, split, FFN_RATES, batch, train=train, decode="auto", device=context.device,
        num_workers=context.sizes.workers, seed=context.seed, crop_size=size, test_resize=size, multi_scale=False,
    )  # fmt: skip


def evaluate_accuracy(model: torch.nn.Module, loader: Any, device: torch.device, bf16: bool) -> dict[str, float]:
    """Top-1 accuracy of every FFN branch on an evaluation loader."""
    model.eval()
    correct = {rate: 0 for rate in FFN_RATES}
    total = 0
    with torch.no_grad():
        for batch in loader:
            labels = batch["label"].to(device)
            with autocast(device, bf16):
                logits = model.forward_rates(batch["frames"])
            for rate in FFN_RATES:
                correct[rate] += int((logits[rate].argmax(dim=1) == labels).sum())
            total += len(labels)
    model.train()
    return {str(rate): correct[rate] / max(1, total) for rate in FFN_RATES} | {"videos": total}


def section_short_training(context: Context, seconds: float) -> dict[str, Any]:
    """Section 6: TSM-FFN (tiny network, AdamW, cosine) on the temporal shards for about `seconds`."""
    shards = context.need_shards("temporal")
    sizes = context.sizes
    train_loader = temporal_loader(context, shards, "train", True, sizes.train_batch)
    classes = context.temporal_classes
    torch.manual_seed(context.seed)
    model = build_model("tiny", classes, ffn_frames=FFN_RATES, dropout=0.0, channels_last=context.on_cuda)
    model = model.to(context.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, weight_decay=TRAIN_WEIGHT_DECAY)
    trainer = Trainer(model, optimizer, context.device, bf16=context.on_cuda)
    planned = sizes.train_epochs * len(train_loader)
    train_seconds = 0.8 * seconds
    started = time.perf_counter()
    steps, progress, losses = 0, 0.0, []
    batches = endless(train_loader)
    for batch in batches:
        time_progress = (time.perf_counter() - started) / train_seconds if train_seconds > 0 else 0.0
        progress = max(steps / planned, time_progress)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(progress)
        losses.append(float(trainer.step(batch["frames"], batch["label"].to(context.device))))
        steps += 1
    batches.close()
    synchronize(context.device)
    train_elapsed = time.perf_counter() - started
    eval_loader = temporal_loader(context, shards, "validation", False, sizes.eval_batch)
    accuracy = evaluate_accuracy(model, eval_loader, context.device, context.on_cuda)
    mean_accuracy = float(np.mean([accuracy[str(rate)] for rate in FFN_RATES]))
    return {
        "arch": "tiny", "classes": classes, "chance": 1.0 / classes, "size": sizes.temporal_size,
        "batch_videos": sizes.train_batch, "steps": steps, "planned_steps": planned,
        "epochs": steps / max(1, len(train_loader)), "train_seconds": train_elapsed,
        "frames_per_s": steps * sizes.train_batch * ffn_frames_per_video(FFN_RATES) / train_elapsed,
        "first_loss": losses[0] if losses else None, "last_loss": float(np.mean(losses[-10:])) if losses else None,
        "accuracy": accuracy, "mean_accuracy": mean_accuracy, "mean_accuracy_over_chance": mean_accuracy * classes,
        "accuracy_over_chance_16f": accuracy["16"] * classes,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Targets, report, main
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One figure the issue sets a target for."""

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


SectionFunction = Callable[[Context, float], dict[str, Any]]
SECTIONS: list[tuple[str, SectionFunction]] = [
    ("shards", section_shards),
    ("parity", section_parity),
    ("decode", section_decode),
    ("loader_training", section_loader_training),
    ("model_speed", section_model_speed),
    ("memory", section_memory),
    ("short_training", section_short_training),
]


def run_section(name: str, function: SectionFunction, context: Context, allotted: float) -> dict[str, Any]:
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


def run_sections(report: Report, context: Context, budget: Budget, selected: Sequence[str], judged: bool) -> None:
    """Run the selected sections in order, each within its share of the budget; save after each one."""
    chosen = [(name, function) for name, function in SECTIONS if name in selected]
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help=f"JSON file, or a folder for {JSON_NAME}")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="wall-clock budget of all sections (sizes and steps scale to it; the rest is skipped)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: model.get_device())")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (automatic without CUDA)")
    parser.add_argument("--quick", action="store_true", help="same as --smoke (the benchmarks' common flag)")
    parser.add_argument("--sections", nargs="+", default=[name for name, _ in SECTIONS],
                        choices=[name for name, _ in SECTIONS], help="run only these (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers for the GPU backends")
    parser.add_argument("--cpu-workers", type=int, default=None, help="loader workers for the cpu backend")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder for shards (default: a temp one)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the check; return the results (also written to the JSON)."""
    args = parse_args(argv)
    device = get_device(args.device)
    smoke = bool(args.smoke or args.quick or device.type != "cuda")
    judged = not smoke
    budget = Budget(args.budget_s, started=PROCESS_STARTED)
    sizes = resolve_sizes(smoke, args.budget_s, args.workers, args.cpu_workers)
    report = Report(resolve_out(args.out))
    report.results["environment"] = environment(device, smoke, args.budget_s)
    report.results["sizes"] = asdict(sizes)
    report.save(judged)
    with scratch_folder(args.work_dir, args.keep_work) as work:
        context = Context(device=device, sizes=sizes, work=work, smoke=smoke, seed=args.seed)
        run_sections(report, context, budget, args.sections, judged)
    report.results["total_seconds"] = time.perf_counter() - budget.started
    report.save(judged)
    print_summary(report)
    return report.results


if __name__ == "__main__":
    main()
