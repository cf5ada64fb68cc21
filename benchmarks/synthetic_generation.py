"""Synthetic data generation speed and frame sizes, measured side by side on one machine.

Measures, on the same clips:

- encoding strategies: one ffmpeg process per clip, or one ffmpeg process per batch of BATCH_CLIPS clips cut
  into one file per clip (what ``preprocess.synthetic`` does), each on 1 thread and on a pool of 2 threads;
- ``generate_dataset`` end to end (render, encode, write annotations);
- the textured 427x240 mode: JPEG (PIL, quality 90) kB per frame of the raw frames and of the VP9-decoded frames,
  and render / encode seconds per clip.

Run: ``.venv/bin/python -m benchmarks.synthetic_generation --out runs/bench`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from preprocess import synthetic
from preprocess.ffmpeg_tools import resolve_ffmpeg

JPEG_QUALITY = 90
FULL = {"clips": 384, "textured_clips": 4, "textured_frames": 48}
QUICK = {"clips": 64, "textured_clips": 1, "textured_frames": 12}
RESULT_FILE = "synthetic_generation.json"


def _clips(count: int, width: int = 32, height: int = 32, num_frames: int = 48, textured: bool = False) -> list:
    """Render `count` clips cycling over the classes."""
    classes = len(synthetic.CLASS_TEMPLATES)
    return [
        synthetic.render_clip(index % classes, synthetic.clip_rng(0, index % classes, index), num_frames, width,
                              height, textured)
        for index in range(count)
    ]


def _encode_per_clip(clips: list[np.ndarray], folder: Path, ffmpeg: str, workers: int) -> float:
    """Encode each clip with its own ffmpeg process on `workers` threads; return clips per second."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda item: synthetic.encode_webm(item[1], folder / f"c{item[0]}.webm", 12, ffmpeg),
                      enumerate(clips)))
    return len(clips) / (time.perf_counter() - started)


def _encode_batched(clips: list[np.ndarray], folder: Path, ffmpeg: str, workers: int) -> float:
    """Encode BATCH_CLIPS clips per ffmpeg process (as the generator does) on `workers` threads; clips per second."""
    size = synthetic.BATCH_CLIPS
    batches = [list(range(start, min(start + size, len(clips)))) for start in range(0, len(clips), size)]

    def encode(batch: list[int]) -> None:
        synthetic.encode_webm_batch((clips[index] for index in batch), [len(clips[index]) for index in batch],
                                    [folder / f"b{index}.webm" for index in batch], 12, ffmpeg, 32, 32)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(encode, batches))
    return len(clips) / (time.perf_counter() - started)


def _jpeg_kilobytes(frames: np.ndarray) -> float:
    """Mean JPEG size in kB (1000 bytes) of the frames at quality 90."""
    sizes = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        sizes.append(len(buffer.getvalue()))
    return float(np.mean(sizes)) / 1000.0


def _decode(path: Path, ffmpeg: str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode a video to uint8 RGB frames of `shape`'s frame size."""
    command = [ffmpeg, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, *shape[1:])


def measure_encoding(count: int, folder: Path, ffmpeg: str) -> dict[str, float]:
    """Clips per second of the three encoding strategies on the same 32x32x48 clips."""
    clips = _clips(count)
    started = time.perf_counter()
    _clips(count)
    render_rate = count / (time.perf_counter() - started)
    return {
        "render_only": render_rate,
        "per_clip_1_thread": _encode_per_clip(clips, folder, ffmpeg, 1),
        "per_clip_2_threads": _encode_per_clip(clips, folder, ffmpeg, 2),
        "batched_1_thread": _encode_batched(clips, folder, ffmpeg, 1),
        "batched_2_threads": _encode_batched(clips, folder, ffmpeg, 2),
    }


def measure_generate(count: int, folder: Path) -> dict[str, float]:
    """End-to-end generate_dataset with about `count` clips on 2 workers."""
    per_class = max(1, count // len(synthetic.CLASS_TEMPLATES))
    summary = synthetic.generate_dataset(folder / "dataset", per_class, workers=2)
    return {"videos": summary["num_videos"], "seconds": summary["seconds"],
            "clips_per_second": summary["clips_per_second"]}


def measure_textured(count: int, num_frames: int, folder: Path, ffmpeg: str) -> dict[str, float]:
    """JPEG kB per frame and seconds per clip of the textured 427x240 mode."""
    width, height = synthetic.TEXTURED_SIZE
    started = time.perf_counter()
    clips = _clips(count, width, height, num_frames, textured=True)
    render_seconds = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for index, clip in enumerate(clips):
        synthetic.encode_webm(clip, folder / f"t{index}.webm", 12, ffmpeg)
    encode_seconds = (time.perf_counter() - started) / count
    decoded = [_decode(folder / f"t{index}.webm", ffmpeg, clip.shape) for index, clip in enumerate(clips)]
    return {
        "raw_jpeg_kB_per_frame": float(np.mean([_jpeg_kilobytes(clip) for clip in clips])),
        "vp9_decoded_jpeg_kB_per_frame": float(np.mean([_jpeg_kilobytes(frames) for frames in decoded])),
        "webm_kB_per_clip": float(np.mean([(folder / f"t{i}.webm").stat().st_size for i in range(count)])) / 1000,
        "render_seconds_per_clip": render_seconds,
        "encode_seconds_per_clip": encode_seconds,
    }


def print_table(results: dict[str, Any]) -> None:
    """Print the figures as a plain table."""
    encoding = results["encoding_clips_per_second"]
    baseline = encoding["per_clip_1_thread"]
    print(f"{'32x32x48 clips':<40}{'clips/s':>10}{'ratio':>8}")
    for name, rate in encoding.items():
        print(f"{name:<40}{rate:>10.1f}{rate / baseline:>8.2f}")
    generate = results["generate_dataset"]
    print(f"{'generate_dataset, 2 workers':<40}{generate['clips_per_second']:>10.1f}"
          f"   ({generate['videos']} videos in {generate['seconds']:.1f} s)")
    print("textured 427x240:")
    for name, value in results["textured_427x240"].items():
        print(f"  {name:<38}{value:>10.2f}")
    print(f"machine: {results['machine']}, load average at start {results['load_average_at_start'][0]:.1f}")


def main() -> None:
    """Run the measurements, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    ffmpeg = resolve_ffmpeg()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        results = {
            "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cores",
            "load_average_at_start": list(os.getloadavg()),
            "ffmpeg": ffmpeg.as_dict(),
            "quick": args.quick,
            "encoding_clips_per_second": measure_encoding(sizes["clips"], folder, ffmpeg.path),
            "generate_dataset": measure_generate(sizes["clips"], folder),
            "textured_427x240": measure_textured(sizes["textured_clips"], sizes["textured_frames"], folder,
                                                 ffmpeg.path),
        }
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / RESULT_FILE).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
