"""Check a CUDA machine in one command: DALI and the whole training path on one GPU, every figure in one JSON.

    python -m benchmarks.gpu_check --out runs/gpu/gpu_check.json     # a CUDA machine (H100 / H200: about 4 min)
    python -m benchmarks.gpu_check --out runs/gpu --smoke            # CPU smoke run, toy sizes

It makes its own data (numpy + Pillow, no ffmpeg: ``benchmarks.gpu_check_data``), then runs the sections below,
each under a share of ``--budget-s`` (default 220 s). The harness (budget, sizes, targets, the JSON and the Markdown
table beside it, rewritten after every section so that a run cut short still reports what it did) is
``benchmarks.gpu_report``; the training pieces come from ``engine`` and the loader from ``data_pipeline``.

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
5. memory: peak GPU memory of TSM-FFN training at 8 and 16 videos per GPU; families: the official FFN model of
   every registered family (model.registry.reference_runs): training frames/s in the training precision and peak
   GPU memory at its official recipe's videos per GPU;
6. short_training: a short real training of TSM-FFN on the temporal shards, held-out accuracy against chance;
7. cost: multiply-adds and latency per video of TSM and TSM-FFN at 4, 8 and 16 frames (``engine.cost``, what
   evaluate.py and predict.py report), in the training precision and in fp32.

Without CUDA (or with ``--smoke``) every section runs at toy sizes (tiny network, small frames; the GPU backends
run on the CPU where they can: torchvision's CPU decoder, DALI's CPU mode) and CUDA-only parts are recorded as
skipped with the reason. Targets are judged only in a full CUDA run.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

IMPORTS_STARTED = time.perf_counter()  # the budget includes the heavy imports below

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.gpu_check_data import BatchDecoder, backend_unavailable_reason, select_samples  # noqa: E402
from benchmarks.gpu_data_sections import (  # noqa: E402
    BACKENDS,
    FFN_FRAMES,
    FRAMES_PER_FFN_VIDEO,
    backend_parity,
    section_decode,
    section_shards,
)
from benchmarks.gpu_report import (  # noqa: E402
    V100_32GB_MIB,
    Context,
    SectionFunction,
    SectionSkipped,
    guarded,
    run_check,
    run_for,
    synchronize,
)
from data_pipeline import build_loader  # noqa: E402
from data_pipeline.decode import DECODERS  # noqa: E402
from engine.cost import measure_costs, weight_alteration_share  # noqa: E402
from engine.evaluation import evaluate_networks  # noqa: E402
from engine.precision import tf32_disabled  # noqa: E402
from engine.schedule import LearningRateShape  # noqa: E402
from engine.training import make_criterion, train_step  # noqa: E402
from model import build_model, model_options  # noqa: E402
from model.registry import model_recipe, reference_runs  # noqa: E402
from torch.optim.lr_scheduler import LambdaLR  # noqa: E402

IMPORT_S = time.perf_counter() - IMPORTS_STARTED
NUM_CLASSES = 174
# Rough seconds per training step of the four bench_model networks together (224 frames, H100), to size its run.
BENCH_STEP_S = {"bf16": 0.4, "fp32": 1.0}
CONSTANT_RATE = LearningRateShape("step", steps_per_epoch=1, epochs=1, warmup_epochs=0.0, lr_steps=[])


# Backends on identical samples (sections 1 and 2)


def model_parity(context: Context) -> dict[str, Any]:
    """TSM-FFN logits on the device in fp32 with TF32 off against CPU fp32 logits (relative L2).

    Without CUDA the stand-in compares channels_last against contiguous on the CPU (same code path, same check).
    """
    sizes = context.sizes
    torch.manual_seed(context.seed)
    reference_model = build_model(sizes.arch, NUM_CLASSES, trained_frames=FFN_FRAMES).eval()
    generator = torch.Generator().manual_seed(context.seed)
    inputs = {frames: torch.randn(1, frames, 3, sizes.crop, sizes.crop, generator=generator) for frames in FFN_FRAMES}
    with torch.no_grad():
        reference = reference_model.forward_by_frames(inputs)
    if context.on_cuda:
        target_model, label = reference_model.to(context.device), f"{context.device} fp32, TF32 off"
    else:
        target_model = build_model(sizes.arch, NUM_CLASSES, trained_frames=FFN_FRAMES, channels_last=True).eval()
        target_model.load_state_dict(reference_model.state_dict())
        label = "cpu channels_last (smoke stand-in for CUDA)"
    with torch.no_grad(), tf32_disabled():
        target = target_model.forward_by_frames({frames: video.to(context.device) for frames, video in inputs.items()})
    reference_flat = torch.cat([reference[frames].flatten() for frames in FFN_FRAMES]).double()
    target_flat = torch.cat([target[frames].float().cpu().flatten() for frames in FFN_FRAMES]).double()
    relative = ((reference_flat - target_flat).norm() / reference_flat.norm()).item()
    return {"arch": sizes.arch, "crop": sizes.crop, "compared": label, "relative_l2": relative,
            "reference_norm": reference_flat.norm().item()}  # fmt: skip


def section_parity(context: Context, seconds: float) -> dict[str, Any]:
    """Section 1: backend parity and model parity."""
    return {"backends": guarded(lambda: backend_parity(context)), "model": guarded(lambda: model_parity(context))}


# Training throughput with the real loader (section 3)


FfnStep = Callable[[dict[int, torch.Tensor], torch.Tensor], torch.Tensor]


def make_ffn_step(context: Context, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  schedule: LearningRateShape | None = None) -> FfnStep:
    """engine.training.train_step with the FFN loss, as train.py runs it; returns the detached loss.

    Without a schedule the rate stays constant (throughput and memory sections).
    """
    criterion = make_criterion("ffn")
    scheduler = LambdaLR(optimizer, schedule or CONSTANT_RATE)
    scaler = torch.amp.GradScaler(context.device.type, enabled=context.precision == "fp16")

    def step(videos_by_frames: dict[int, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return train_step(model, criterion, optimizer, scheduler, scaler, videos_by_frames, labels,
                          context.device, context.precision).loss

    return step


def ffn_training(context: Context, arch: str, num_classes: int, learning_rate: float = 1e-3,
                 trained_frames: Sequence[int] = FFN_FRAMES) -> FfnStep:
    """An FFN's training in the CUDA training setting (bf16 autocast, channels_last where the family has it) or fp32
    on the CPU."""
    torch.manual_seed(context.seed)
    options = {"channels_last": context.on_cuda} if "channels_last" in model_options(arch) else {}
    model = build_model(arch, num_classes, trained_frames=trained_frames, **options).to(context.device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9, weight_decay=5e-4)
    return make_ffn_step(context, model, optimizer)


def endless(loader: Any) -> Iterator[dict[str, Any]]:
    """Iterate a training loader over epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class LoaderFeed:
    """Feeds a training step from a loader, one batch ahead, counting videos and the host time spent in next()."""

    def __init__(self, train_step: FfnStep, loader: Any) -> None:
        self.train_step = train_step
        self.iterator = endless(loader)
        started = time.perf_counter()
        self.batch = next(self.iterator)
        self.first_batch_s = time.perf_counter() - started
        self.videos = 0
        self.wait_s = 0.0

    def step(self) -> None:
        """Train on the current batch (already on the device), then fetch the next one."""
        labels = self.batch["label"]
        self.train_step(self.batch["videos"], labels)
        self.videos += len(labels)
        waited = time.perf_counter()
        self.batch = next(self.iterator)
        self.wait_s += time.perf_counter() - waited

    def reset_counts(self) -> None:
        """Forget the warm-up."""
        self.videos, self.wait_s = 0, 0.0


def loader_rate(context: Context, train_step: FfnStep, loader: Any, seconds: float) -> dict[str, Any]:
    """Train from `loader` for `seconds` after warm-up; frames/s and the host time spent waiting in next()."""
    feed = LoaderFeed(train_step, loader)
    for _ in range(context.warmup_steps):
        feed.step()
    feed.reset_counts()
    steps, elapsed = run_for(feed.step, seconds, context.min_steps, context.device)
    feed.iterator.close()
    frames = feed.videos * FRAMES_PER_FFN_VIDEO
    return {"steps": steps, "seconds": elapsed, "frames_per_s": frames / elapsed, "first_batch_s": feed.first_batch_s,
            "wait_in_next_s_per_step": feed.wait_s / steps}  # fmt: skip


def in_device_rate(context: Context, train_step: FfnStep, batch: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Train on one batch already on the device for `seconds` after warm-up: the loader-free ceiling."""
    videos_by_frames = {frames: videos.to(context.device) for frames, videos in batch["videos"].items()}
    labels = batch["label"].to(context.device)
    for _ in range(context.warmup_steps):
        train_step(videos_by_frames, labels)
    steps, elapsed = run_for(lambda: train_step(videos_by_frames, labels), seconds, context.min_steps,
                             context.device)
    return {"steps": steps, "seconds": elapsed,
            "frames_per_s": steps * len(labels) * FRAMES_PER_FFN_VIDEO / elapsed}  # fmt: skip


def section_loader_training(context: Context, seconds: float) -> dict[str, Any]:
    """Section 3: TSM-FFN training frames/s in-device vs with the real loader of each backend; data stall."""
    sizes = context.sizes
    shards = context.need_shards("throughput")
    train_step = ffn_training(context, sizes.arch, NUM_CLASSES)
    per_run = 0.7 * seconds / (1 + len(BACKENDS))
    samples = select_samples(shards, sizes.batch, sizes.crop, context.seed, FFN_FRAMES)
    batch = BatchDecoder("cpu", torch.device("cpu"), 0)(samples)
    ceiling = in_device_rate(context, train_step, batch, per_run)
    results: dict[str, Any] = {
        "arch": sizes.arch, "batch_videos": sizes.batch, "frames": list(FFN_FRAMES), "crop": sizes.crop,
        "bf16": context.precision == "bf16", "channels_last": context.on_cuda, "in_device": ceiling, "backends": {},
    }  # fmt: skip
    for backend in BACKENDS:
        if DECODERS[backend].needs_cuda and not context.on_cuda:
            results["backends"][backend] = {"status": "skipped", "reason": "the real loader runs GPU backends on CUDA"}
            continue
        if not DECODERS[backend].available():
            results["backends"][backend] = {"status": "skipped", "reason": backend_unavailable_reason(backend)}
            continue
        workers = sizes.cpu_workers if backend == "cpu" else sizes.workers

        def measure(backend: str = backend, workers: int = workers) -> dict[str, Any]:
            loader = build_loader(
                shards, "train", FFN_FRAMES, sizes.batch, train=True, decode=backend, device=context.device,
                num_workers=workers, seed=context.seed, crop_size=sizes.crop,
            )  # fmt: skip
            measured = loader_rate(context, train_step, loader, per_run)
            stall = 1.0 - measured["frames_per_s"] / ceiling["frames_per_s"]
            return {"status": "ok", "workers": workers, "data_stall": stall, **measured}

        results["backends"][backend] = guarded(measure)
        gc.collect()
    return results


# Section 4: model speed (benchmarks.bench_model), section 5: memory


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


def random_batch(context: Context, trained_frames: Sequence[int], videos: int,
                 crop: int) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Random videos {T: (videos, T, 3, crop, crop)} and labels on the device."""
    videos_by_frames = {frames: torch.randn(videos, frames, 3, crop, crop, device=context.device)
                        for frames in trained_frames}
    return videos_by_frames, torch.randint(0, NUM_CLASSES, (videos,), device=context.device)


def memory_at(context: Context, videos: int, arch: str | None = None,
              trained_frames: Sequence[int] = FFN_FRAMES) -> dict[str, Any]:
    """Peak memory of FFN training steps at `videos` per GPU (bf16, channels_last, random frames; TSM by default)."""
    sizes = context.sizes
    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(context.device)
    context_mib = (total - free - torch.cuda.memory_reserved(context.device)) / 2**20
    torch.cuda.reset_peak_memory_stats(context.device)
    train_step = ffn_training(context, arch or sizes.arch, NUM_CLASSES, trained_frames=trained_frames)
    videos_by_frames, labels = random_batch(context, trained_frames, videos, sizes.crop)
    for _ in range(3):
        train_step(videos_by_frames, labels)
    synchronize(context.device)
    allocated = torch.cuda.max_memory_allocated(context.device) / 2**20
    reserved = torch.cuda.max_memory_reserved(context.device) / 2**20
    del train_step, videos_by_frames, labels
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


def family_step_rate(context: Context, arch: str, trained_frames: Sequence[int], videos: int,
                     seconds: float) -> dict[str, Any]:
    """Training frames/s of one family's FFN (random videos on the device, the training precision)."""
    crop = context.sizes.crop
    train_step = ffn_training(context, arch, NUM_CLASSES, trained_frames=trained_frames)
    videos_by_frames, labels = random_batch(context, trained_frames, videos, crop)
    for _ in range(context.warmup_steps):
        train_step(videos_by_frames, labels)
    steps, elapsed = run_for(lambda: train_step(videos_by_frames, labels), seconds, context.min_steps,
                             context.device)
    return {"arch": arch, "frames": list(trained_frames), "videos": videos, "crop": crop, "steps": steps,
            "frames_per_s": steps * videos * sum(trained_frames) / elapsed}


def section_families(context: Context, seconds: float) -> dict[str, Any]:
    """Section 5b: the official FFN model of every registered family: training frames/s in the training precision
    and peak GPU memory at its official recipe's videos per GPU (its views included)."""
    results: dict[str, Any] = {"precision": context.precision}
    runs = reference_runs()
    for family, run in runs.items():
        recipe = model_recipe(run.arch, "official") or {}
        videos = int(recipe.get("batch_size", context.sizes.batch)) * int(recipe.get("train_views", 1))
        videos = 1 if context.smoke else videos

        def measure(arch: str = run.arch, frames: tuple[int, ...] = run.trained_frames,
                    videos: int = videos) -> dict[str, Any]:
            record = {"status": "ok", **family_step_rate(context, arch, frames, videos, seconds / 2 / len(runs))}
            if context.on_cuda:
                record["memory"] = guarded(lambda: {"status": "ok", **memory_at(context, videos, arch, frames)})
            return record

        results[family] = guarded(measure)
        gc.collect()
    return results


# Section 6: a short real training on the temporal shards

TRAIN_LR = 3e-3
TRAIN_WEIGHT_DECAY = 0.05
TRAIN_WARMUP_FRACTION = 0.1


def temporal_loader(context: Context, shards: Path, split: str, train: bool, batch: int) -> Any:
    """The real loader over the temporal shards (whole 32 px frames: no multi-scale crop, like the demo)."""
    size = context.sizes.temporal_size
    return build_loader(
        shards, split, FFN_FRAMES, batch, train=train, decode="auto", device=context.device,
        num_workers=context.sizes.workers, seed=context.seed, crop_size=size, test_resize=size, multi_scale=False,
    )  # fmt: skip


def evaluate_accuracy(model: torch.nn.Module, loader: Any, context: Context) -> dict[str, float]:
    """Top-1 accuracy (a fraction) of every FFN branch on an evaluation loader, and the videos seen."""
    results = evaluate_networks({"ffn": model}, loader, FFN_FRAMES, context.device, context.precision)["ffn"]
    accuracy: dict[str, float] = {str(frames): results[frames]["top1"] / 100.0 for frames in FFN_FRAMES}
    return accuracy | {"videos": results[FFN_FRAMES[0]]["n"]}


def section_short_training(context: Context, seconds: float) -> dict[str, Any]:
    """Section 6: TSM-FFN (tiny network, AdamW, warm-up and cosine: engine's step and schedule) on the temporal
    shards, stopped early when its share of the budget runs out (a smoke run, with no time allotted, runs them all)."""
    shards = context.need_shards("temporal")
    sizes = context.sizes
    train_loader = temporal_loader(context, shards, "train", True, sizes.train_batch)
    classes = context.temporal_classes
    torch.manual_seed(context.seed)
    model = build_model("tiny", classes, trained_frames=FFN_FRAMES, dropout=0.0, channels_last=context.on_cuda)
    model = model.to(context.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, weight_decay=TRAIN_WEIGHT_DECAY)
    schedule = LearningRateShape("cosine", len(train_loader), sizes.train_epochs,
                                 TRAIN_WARMUP_FRACTION * sizes.train_epochs, [])
    train_step = make_ffn_step(context, model, optimizer, schedule)
    planned = sizes.train_epochs * len(train_loader)
    deadline = time.perf_counter() + 0.8 * seconds if seconds > 0 else float("inf")
    started = time.perf_counter()
    losses: list[float] = []
    batches = endless(train_loader)
    for batch in itertools.islice(batches, planned):
        if time.perf_counter() > deadline:
            break
        losses.append(float(train_step(batch["videos"], batch["label"])))
    batches.close()
    synchronize(context.device)
    train_elapsed = time.perf_counter() - started
    steps = len(losses)
    eval_loader = temporal_loader(context, shards, "validation", False, sizes.eval_batch)
    accuracy = evaluate_accuracy(model, eval_loader, context)
    mean_accuracy = float(np.mean([accuracy[str(frames)] for frames in FFN_FRAMES]))
    return {
        "arch": "tiny", "classes": classes, "chance": 1.0 / classes, "size": sizes.temporal_size,
        "batch_videos": sizes.train_batch, "steps": steps, "planned_steps": planned,
        "epochs": steps / max(1, len(train_loader)), "train_seconds": train_elapsed,
        "frames_per_s": steps * sizes.train_batch * FRAMES_PER_FFN_VIDEO / train_elapsed,
        "first_loss": losses[0] if losses else None, "last_loss": float(np.mean(losses[-10:])) if losses else None,
        "accuracy": accuracy, "mean_accuracy": mean_accuracy, "mean_accuracy_over_chance": mean_accuracy * classes,
        "accuracy_over_chance_16f": accuracy["16"] * classes,
    }  # fmt: skip


# Section 7: what a frame count costs

COST_FRAMES = (4, 8, 16)
COST_LATENCY_RUNS = {"smoke": 1, "full": 20}


def section_cost(context: Context, seconds: float) -> dict[str, Any]:
    """Section 7: multiply-adds and latency per video (batch 1) of TSM and TSM-FFN, training precision and fp32."""
    sizes = context.sizes
    networks = {
        "tsm": build_model(sizes.arch, NUM_CLASSES, channels_last=context.on_cuda),
        "ffn": build_model(sizes.arch, NUM_CLASSES, trained_frames=FFN_FRAMES, channels_last=context.on_cuda),
    }
    for network in networks.values():
        network.to(context.device).eval()
    runs = COST_LATENCY_RUNS["smoke" if context.smoke else "full"]
    by_precision = {precision: measure_costs(networks, COST_FRAMES, sizes.crop, 1, context.device, precision, runs)
                    for precision in dict.fromkeys((context.precision, "fp32"))}
    first = next(iter(by_precision.values()))
    return {
        "arch": sizes.arch, "crop": sizes.crop, "latency_runs": runs,
        "gflops": {name: costs["gflops"] for name, costs in first.items()},
        "latency_ms": {precision: {name: costs["latency_ms"] for name, costs in costs_by_name.items()}
                       for precision, costs_by_name in by_precision.items()},
        "weight_alteration_share": weight_alteration_share(networks["ffn"], COST_FRAMES[0], sizes.crop),
    }  # fmt: skip


SECTIONS: list[tuple[str, SectionFunction]] = [
    ("shards", section_shards),
    ("parity", section_parity),
    ("decode", section_decode),
    ("loader_training", section_loader_training),
    ("model_speed", section_model_speed),
    ("memory", section_memory),
    ("families", section_families),
    ("short_training", section_short_training),
    ("cost", section_cost),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the check's sections under the budget; return the results (also written to the JSON)."""
    started = time.perf_counter() - IMPORT_S  # the budget counts the imports, not the time since them
    return run_check(SECTIONS, argv, started=started, description=__doc__)


if __name__ == "__main__":
    main()
