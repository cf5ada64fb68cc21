"""Preprocessing speed: `make shards` against the TSM reference extraction and the one-process ceiling.

On textured 427x240 synthetic VP9 clips (24-59 frames at 12 fps, i.e. 2-5 s), with the same ffmpeg binary,
frame size (short side 256, 455x256) and JPEG quality, in one process pinned to one CPU core, it times:

- ``make_shards``: ``preprocess.make_shards.main(--workers 1)`` in-process (annotations, decoding, JPEG encoding,
  tar writing, sidecars, manifest);
- ``reference``: TSM's extraction, one ffmpeg per video (-threads 1 -vf scale=-1:256), one JPEG file per frame in
  a folder per video;
- ``ceiling``: one ffmpeg process decoding and JPEG-encoding all the clips back to back (concat input, MJPEG to a
  pipe);
- ``batched_mjpeg``: the design not taken: our batching (one ffmpeg per batch, one pipe per video) with ffmpeg's
  MJPEG encoder instead of libjpeg-turbo.

ffmpeg's MJPEG quality is a qscale (-q:v), Pillow's is the IJG scale: "the same quality" is the -q:v whose PSNR
against the decoded source is closest to Pillow quality 90's (both measured and reported). The methods run
round-robin for several rounds and the best time of each is kept (other jobs add noise). Then --workers
scaling (not pinned) and the videos-per-ffmpeg batch size. Every binary found (imageio-ffmpeg's static one,
then ``ffmpeg`` on PATH, e.g. Debian's) is measured.

Per dataset (``--datasets``, first binary, pinned): ``make shards --dataset NAME`` on each layout's textured
synthetic data at its own sizes (SSv1 176x100 JPEG folders, Kinetics 340x256 / 348x256 / 256x340 H.264 at 24, 25
and 30 fps, HMDB51 320x240 MPEG-4 avi at 30 fps, TSM-list 340x256 JPEG folders; SSv2 the clips above) against
that layout's one-process ffmpeg ceiling: for video files the concat ceiling above, for frame folders one ffmpeg
reading every frame file (image2 glob) and writing MJPEG to a pipe at native size.

    .venv/bin/python -m benchmarks.bench_preprocess --out runs/bench            # 48 clips, 3 rounds
    .venv/bin/python -m benchmarks.bench_preprocess --out runs/bench --quick    # 6 clips, 1 round, < 1 min
    .venv/bin/python -m benchmarks.bench_preprocess --out runs/bench --datasets-only   # the per-dataset table
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import platform
import resource
import selectors
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.atomic import write_json_atomic
from preprocess import make_shards
from preprocess.datasets.ssv2 import video_path
from preprocess.ffmpeg_tools import FFMPEG_ENV_VAR, resolve_ffmpeg
from shard_format import manifest_path, read_manifest
from preprocess.video_decode import PPM_HEADER, decode_videos, ffmpeg_command

SHORT_SIDE = 256
QUALITY = 90
CLIP_SIZE = (427, 240)
CLIP_FRAMES = (24, 59)
QSCALES = (1, 2, 3, 4, 5)
NUM_CLASSES = 12
FULL_VIDEOS_PER_CLASS = 4
QUICK_VIDEOS_PER_CLASS = 1
QUICK_CLASSES = 6
QUICK_QSCALES = (1, 2)
JPEG_EOI = b"\xff\xd9"
READ_CHUNK_BYTES = 1 << 20
BATCH_SIZES = (1, 4, 8, 16)
TARGET_RATIO = 0.9
DATASET_NAMES = ("ssv2", "ssv1", "k400", "hmdb51", "tsm-list")
# Each layout's clips: frame size (width, height) and frames per clip (a range).
DATASET_CLIPS = {
    "ssv1": ((176, 100), (24, 59)),
    "k400": ((340, 256), (48, 72)),
    "hmdb51": ((320, 240), (48, 72)),
    "tsm-list": ((340, 256), (24, 59)),
}
DATASET_CLASSES = 4
FULL_DATASET_VIDEOS_PER_CLASS = 3
QUICK_DATASET_VIDEOS_PER_CLASS = 1
CEILING_QSCALE = 1  # the -q:v closest to Pillow quality 90 in PSNR (the quality table)
FRAME_GLOBS = {"ssv1": "20bn-something-something-v1/*/*.jpg", "tsm-list": "*/*/img_*.jpg"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_preprocess.json")
    parser.add_argument("--quick", action="store_true", help="6 clips, one round, first binary, no batch sweep")
    parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 3, quick 1)")
    parser.add_argument("--videos-per-class", type=int, default=None, help="clips per class (12 classes)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU core to pin to (default: the last usable)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--batch-videos", type=int, default=make_shards.DEFAULT_BATCH_VIDEOS)
    parser.add_argument("--datasets", nargs="+", choices=DATASET_NAMES, default=list(DATASET_NAMES),
                        help="datasets of the per-dataset table")
    parser.add_argument("--datasets-only", action="store_true", help="only the per-dataset table")
    parser.add_argument("--dataset-videos-per-class", type=int, default=None,
                        help=f"clips per class of each layout ({DATASET_CLASSES} classes; default "
                             f"{FULL_DATASET_VIDEOS_PER_CLASS}, quick {QUICK_DATASET_VIDEOS_PER_CLASS})")
    return parser.parse_args(argv)


def binaries() -> list[dict[str, str]]:
    """The static imageio-ffmpeg binary, plus `ffmpeg` on PATH when it is another binary."""
    found = [resolve_ffmpeg().as_dict()]
    on_path = shutil.which("ffmpeg")
    if on_path and os.path.realpath(on_path) != os.path.realpath(found[0]["path"]):
        version = subprocess.run([on_path, "-hide_banner", "-version"], capture_output=True, text=True).stdout
        found.append({"path": on_path, "version": version.splitlines()[0], "source": "PATH"})
    return found


@contextlib.contextmanager
def using_ffmpeg(path: str) -> Iterator[None]:
    """Make preprocess.ffmpeg_tools.resolve_ffmpeg return `path` inside the block."""
    previous = os.environ.get(FFMPEG_ENV_VAR)
    os.environ[FFMPEG_ENV_VAR] = path
    resolve_ffmpeg.cache_clear()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FFMPEG_ENV_VAR, None)
        else:
            os.environ[FFMPEG_ENV_VAR] = previous
        resolve_ffmpeg.cache_clear()


def make_clips(root: Path, videos_per_class: int, classes: int) -> list[Path]:
    """Generate the textured 427x240 clips (all in train) and return their paths."""
    from preprocess.synthetic import generate_dataset

    if not (root / "labels" / "train.json").exists():
        generate_dataset(
            root, videos_per_class, num_frames=CLIP_FRAMES, width=CLIP_SIZE[0], height=CLIP_SIZE[1],
            split_fractions=(1.0, 0.0, 0.0), textured=True, classes=classes,
        )  # fmt: skip
    import json

    entries = json.loads((root / "labels" / "train.json").read_text())
    return [video_path(root, entry["id"]) for entry in entries]


def split_jpegs(stream: bytes) -> list[bytes]:
    """Cut an MJPEG stream from ffmpeg into frames at each EOI marker (EOI cannot occur inside entropy data)."""
    frames, start = [], 0
    while True:
        end = stream.find(JPEG_EOI, start)
        if end < 0:
            return frames
        frames.append(stream[start : end + 2])
        start = end + 2


def ceiling_command(ffmpeg: str, list_file: Path, qscale: int, renumber: bool = False) -> list[str]:
    """One ffmpeg over all clips: concat demuxer, TSM's scale, MJPEG to stdout.

    `renumber` (clips of different sizes and frame rates, whose concatenated timestamps go back in time and stop
    the encoder): one filter graph for the whole run (``-reinit_filter 0``; the resize keeps its first output
    size, so every frame still costs one resize) and each frame's index as its timestamp.
    """
    chain = f"scale=-1:{SHORT_SIDE}" + (",settb=1/1000,setpts=N" if renumber else "")
    renumbering = (["-reinit_filter", "0"], ["-enc_time_base", "1/1000"]) if renumber else ([], [])
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-threads", "1", *renumbering[0], "-f", "concat", "-safe",
        "0", "-i", str(list_file), "-threads", "1", "-vf", chain, "-fps_mode", "passthrough", *renumbering[1],
        "-c:v", "mjpeg", "-qmin", "1", "-q:v", str(qscale), "-f", "image2pipe", "pipe:",
    ]  # fmt: skip


def run_ceiling(ffmpeg: str, clips: list[Path], work: Path, qscale: int, renumber: bool = False) -> tuple[int, bytes]:
    """Run the ceiling; return (frames, MJPEG stream)."""
    list_file = work / "concat.txt"
    list_file.write_text("".join(f"file '{clip}'\n" for clip in clips))
    command = ceiling_command(ffmpeg, list_file, qscale, renumber)
    stream = subprocess.run(command, capture_output=True, check=True).stdout
    return len(split_jpegs(stream)), stream


def run_reference(ffmpeg: str, clips: list[Path], work: Path, qscale: int) -> int:
    """TSM's extraction: one ffmpeg per video, one JPEG file per frame; return the frames written."""
    out_root = work / "reference"
    shutil.rmtree(out_root, ignore_errors=True)
    frames = 0
    for clip in clips:
        folder = out_root / clip.stem
        folder.mkdir(parents=True)
        subprocess.run(
            [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-threads", "1", "-i", str(clip),
             "-vf", f"scale=-1:{SHORT_SIDE}", "-qmin", "1", "-q:v", str(qscale), str(folder / "%06d.jpg")],
            check=True,
        )  # fmt: skip
        frames += len(list(folder.iterdir()))
    return frames


def run_make_shards(ffmpeg: str, data_root: Path, work: Path, workers: int | None, batch_videos: int) -> int:
    """`make shards` in-process on the train split (workers None: its default); return the frames written."""
    out = work / "shards"
    shutil.rmtree(out, ignore_errors=True)
    argv = [
        "--data-root", str(data_root), "--out", str(out), "--splits", "train",
        "--short-side", str(SHORT_SIDE), "--quality", str(QUALITY), "--train-shards", "8",
        "--batch-videos", str(batch_videos), "--no-progress",
    ]  # fmt: skip
    if workers is not None:
        argv += ["--workers", str(workers)]
    with using_ffmpeg(ffmpeg):
        if make_shards.main(argv) != 0:
            raise RuntimeError("make_shards failed in the benchmark")
    return read_manifest(manifest_path(out, "train"))["num_frames"]


def batched_mjpeg_command(ffmpeg: str, clips: list[Path], descriptors: list[int], qscale: int) -> list[str]:
    """Our batching (one input and one pipe per video) with ffmpeg's MJPEG encoder at -q:v `qscale`."""
    command = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error"]
    for clip in clips:
        command += ["-threads", "1", "-nofind_stream_info", "-i", str(clip)]
    for index, descriptor in enumerate(descriptors):
        command += [
            "-map", f"{index}:v:0", "-threads", "1", "-vf", f"scale=-1:{SHORT_SIDE}", "-fps_mode", "passthrough",
            "-an", "-c:v", "mjpeg", "-qmin", "1", "-q:v", str(qscale), "-f", "image2pipe", f"pipe:{descriptor}",
        ]  # fmt: skip
    return command


def run_batched_mjpeg(ffmpeg: str, clips: list[Path], qscale: int, batch_videos: int) -> int:
    """Run the batched MJPEG design over all clips; return the frames produced."""
    frames = 0
    for start in range(0, len(clips), batch_videos):
        batch = clips[start : start + batch_videos]
        pipes = [os.pipe() for _ in batch]
        writers = [write for _, write in pipes]
        process = subprocess.Popen(batched_mjpeg_command(ffmpeg, batch, writers, qscale), pass_fds=writers)
        for write in writers:
            os.close(write)
        frames += sum(len(split_jpegs(stream)) for stream in _read_pipes([read for read, _ in pipes]))
        if process.wait() != 0:
            raise RuntimeError("batched MJPEG ffmpeg failed")
    return frames


def _read_pipes(descriptors: list[int]) -> list[bytes]:
    """Read several pipes to their ends at once (ffmpeg interleaves its outputs) and close them."""
    chunks: dict[int, list[bytes]] = {descriptor: [] for descriptor in descriptors}
    selector = selectors.DefaultSelector()
    for descriptor in descriptors:
        selector.register(descriptor, selectors.EVENT_READ)
    remaining = len(descriptors)
    while remaining:
        for key, _ in selector.select():
            chunk = os.read(key.fd, READ_CHUNK_BYTES)
            if chunk:
                chunks[key.fd].append(chunk)
            else:
                selector.unregister(key.fd)
                os.close(key.fd)
                remaining -= 1
    selector.close()
    return [b"".join(chunks[descriptor]) for descriptor in descriptors]


def reference_frames(ffmpeg: str, clips: list[Path]) -> list[np.ndarray]:
    """The decoded source at the output size (the JPEG encoder's input), as RGB arrays."""
    frames = []
    for clip in clips:
        completed = subprocess.run(
            ffmpeg_command(ffmpeg, [clip], [1], SHORT_SIDE), capture_output=True, check=True
        )  # PPM frames on stdout
        data = completed.stdout
        while data:
            header = PPM_HEADER.match(data)
            width, height, header_end = int(header.group(1)), int(header.group(2)), header.end()
            size = width * height * 3
            frames.append(np.frombuffer(data[header_end : header_end + size], np.uint8).reshape(height, width, 3))
            data = data[header_end + size :]
    return frames


def psnr(reference: list[np.ndarray], jpegs: list[bytes]) -> float:
    """PSNR (dB, RGB, 8 bit) of decoded JPEGs against the reference frames, over all pixels."""
    squared, count = 0.0, 0
    for original, jpeg in zip(reference, jpegs, strict=True):
        decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
        squared += float(((decoded - original) ** 2).sum())
        count += original.size
    return 10.0 * np.log10(255.0**2 / (squared / count))


def quality_table(ffmpeg: str, clips: list[Path], work: Path, qscales: tuple[int, ...]) -> dict[str, Any]:
    """Bytes/frame and PSNR of Pillow quality 90 (our path) and of ffmpeg MJPEG at each -q:v."""
    reference = reference_frames(ffmpeg, clips)
    ours = [frame for video in decode_videos(ffmpeg, clips, SHORT_SIDE, QUALITY, 8) for frame in video.frames]
    table = {"pillow_q90": {"bytes_per_frame": float(np.mean([len(f) for f in ours])),
                            "psnr_db": psnr(reference, ours)}}  # fmt: skip
    for qscale in qscales:
        _, stream = run_ceiling(ffmpeg, clips, work, qscale)
        jpegs = split_jpegs(stream)
        table[f"mjpeg_q{qscale}"] = {"bytes_per_frame": float(np.mean([len(f) for f in jpegs])),
                                     "psnr_db": psnr(reference, jpegs)}  # fmt: skip
    target = table["pillow_q90"]["psnr_db"]
    matched = min(qscales, key=lambda q: abs(table[f"mjpeg_q{q}"]["psnr_db"] - target))
    return {"table": table, "matched_qscale": matched, "frame_size": list(reference[0].shape[1::-1])}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of every child it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_rounds(methods: dict[str, Callable[[], int]], rounds: int) -> dict[str, dict[str, Any]]:
    """Run every method once per round, round robin; return frames/s by wall time and by CPU time.

    CPU time (this process plus its waited-for children, e.g. ffmpeg) is what one process costs and is far less
    disturbed by other jobs on a shared machine than wall time; the ratios use it. Best of the rounds is kept.
    """
    walls: dict[str, list[float]] = {name: [] for name in methods}
    cpus: dict[str, list[float]] = {name: [] for name in methods}
    frames: dict[str, int] = {}
    for _ in range(rounds):
        for name, method in methods.items():
            wall_start, cpu_start = time.perf_counter(), _cpu_seconds()
            frames[name] = method()
            walls[name].append(time.perf_counter() - wall_start)
            cpus[name].append(_cpu_seconds() - cpu_start)
    return {
        name: {"frames": frames[name], "cpu_fps": frames[name] / min(cpus[name]),
               "wall_fps": frames[name] / min(walls[name]),
               "median_wall_fps": frames[name] / statistics.median(walls[name]),
               "wall_seconds": walls[name], "cpu_seconds": cpus[name]}
        for name in methods
    }  # fmt: skip


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Pin this process (and the ffmpeg processes it starts) to one core inside the block."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def per_binary(binary: dict[str, str], clips: list[Path], data_root: Path, work: Path, args, rounds: int) -> dict:
    """Quality mapping and the one-core timings for one ffmpeg binary."""
    ffmpeg = binary["path"]
    quality = quality_table(ffmpeg, clips, work, QUICK_QSCALES if args.quick else QSCALES)
    qscale = quality["matched_qscale"]
    methods = {
        "make_shards": lambda: run_make_shards(ffmpeg, data_root, work, 1, args.batch_videos),
        "reference": lambda: run_reference(ffmpeg, clips, work, qscale),
        "ceiling": lambda: run_ceiling(ffmpeg, clips, work, qscale)[0],
        "batched_mjpeg": lambda: run_batched_mjpeg(ffmpeg, clips, qscale, args.batch_videos),
    }
    with pinned(args.cpu):
        timings = timed_rounds(methods, rounds)
    ratios = {name: timings[name]["cpu_fps"] / timings["ceiling"]["cpu_fps"] for name in timings}
    wall_ratios = {name: timings[name]["wall_fps"] / timings["ceiling"]["wall_fps"] for name in timings}
    return {"binary": binary, "quality": quality, "timings": timings, "ratio_to_ceiling": ratios,
            "wall_ratio_to_ceiling": wall_ratios,
            "make_shards_over_reference": timings["make_shards"]["cpu_fps"] / timings["reference"]["cpu_fps"],
            "make_shards_over_reference_wall": timings["make_shards"]["wall_fps"] / timings["reference"]["wall_fps"]}


def scaling(binary: dict[str, str], data_root: Path, work: Path, args, rounds: int) -> dict[str, Any]:
    """make_shards frames/s at 1, 2, cores / 2 and cores workers and at its default (not pinned) and, pinned, at
    each videos-per-ffmpeg batch size."""
    cores = len(os.sched_getaffinity(0))
    worker_counts = sorted({1, 2, max(1, cores // 2), cores} if cores > 1 else {1})
    runs = {f"workers_{n}": (lambda n=n: run_make_shards(binary["path"], data_root, work, n, args.batch_videos))
            for n in worker_counts}
    runs["workers_default"] = lambda: run_make_shards(binary["path"], data_root, work, None, args.batch_videos)
    workers = timed_rounds(runs, rounds)
    batches = {}
    if not args.quick:
        with pinned(args.cpu):
            batches = timed_rounds(
                {f"batch_{n}": (lambda n=n: run_make_shards(binary["path"], data_root, work, 1, n))
                 for n in BATCH_SIZES}, rounds)  # fmt: skip
    return {"cores": cores, "workers": workers, "batch_videos": batches}


def make_layout(name: str, work: Path, videos_per_class: int) -> Path:
    """Generate (once) a layout's textured synthetic data, every clip in train; return its root."""
    from preprocess.synthetic_layouts import GENERATOR_FILE, generate_layout

    size, frames = DATASET_CLIPS[name]
    root = work / f"{name}_{videos_per_class}"
    if not (root / GENERATOR_FILE).exists():
        generate_layout(name, root, videos_per_class, frames, size[0], size[1], split_fractions=(1.0, 0.0, 0.0),
                        classes=DATASET_CLASSES, force=True, textured=True)
    return root


def dataset_flags(name: str, root: Path) -> list[str]:
    """make_shards' dataset flags for a synthetic layout (the TSM lists, their flip rule)."""
    if name != "tsm-list":
        return ["--dataset", name]
    return ["--dataset", name, "--train-list", str(root / "train_list.txt"), "--categories",
            str(root / "categories.txt"), "--no-flip"]


def run_dataset_shards(ffmpeg: str, name: str, root: Path, work: Path, batch_videos: int) -> int:
    """`make shards --dataset NAME` in-process on the train split, each dataset's default size; return frames."""
    out = work / f"shards_{name}"
    shutil.rmtree(out, ignore_errors=True)
    argv = [*dataset_flags(name, root), "--data-root", str(root), "--out", str(out), "--splits", "train",
            "--workers", "1", "--quality", str(QUALITY), "--train-shards", "8", "--batch-videos", str(batch_videos),
            "--max-skip-fraction", "1", "--no-progress"]  # fmt: skip
    with using_ffmpeg(ffmpeg):
        if make_shards.main(argv) != 0:
            raise RuntimeError(f"make_shards --dataset {name} failed in the benchmark")
    return read_manifest(manifest_path(out, "train"))["num_frames"]


def usable_videos(name: str, root: Path) -> list[Path]:
    """The video files of a layout that decode (the ceiling's input; the generator's missing and cut ones left out)."""
    import json

    from preprocess.datasets import DATASETS

    truth = json.loads((root / "generator.json").read_text())["videos"]
    args = make_shards.parse_args([*dataset_flags(name, root), "--data-root", str(root), "--out", str(root)])
    entries = DATASETS[name].read(root, ("train",), args).entries["train"]
    return [Path(entry.source) for entry in entries if truth.get(entry.video_id, {}).get("status") == "ok"]


def run_frame_ceiling(ffmpeg: str, pattern: str) -> int:
    """One ffmpeg reading every frame file matching a glob and writing MJPEG to a pipe at native size; frames."""
    command = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-threads", "1", "-f", "image2", "-pattern_type",
               "glob", "-i", pattern, "-threads", "1", "-c:v", "mjpeg", "-qmin", "1", "-q:v", str(CEILING_QSCALE),
               "-f", "image2pipe", "pipe:"]  # fmt: skip
    return len(split_jpegs(subprocess.run(command, capture_output=True, check=True).stdout))


def video_ceiling_frames(ffmpeg: str, videos: list[Path], work: Path, renumber: bool) -> int:
    """The concat ceiling over video files at the matched quality; frames."""
    return run_ceiling(ffmpeg, videos, work, CEILING_QSCALE, renumber)[0]


def dataset_rates(binary: dict[str, str], work: Path, args, rounds: int, ssv2: tuple[Path, list[Path]]) -> dict:
    """make_shards against its one-process ceiling, per dataset, pinned to one core (frames per CPU second)."""
    ffmpeg = binary["path"]
    per_class = args.dataset_videos_per_class or (
        QUICK_DATASET_VIDEOS_PER_CLASS if args.quick else FULL_DATASET_VIDEOS_PER_CLASS)
    results = {}
    for name in args.datasets:
        root = ssv2[0] if name == "ssv2" else make_layout(name, work, per_class)
        if name in FRAME_GLOBS:
            ceiling = functools.partial(run_frame_ceiling, ffmpeg, str(root / FRAME_GLOBS[name]))
        else:
            videos = ssv2[1] if name == "ssv2" else usable_videos(name, root)
            ceiling = functools.partial(video_ceiling_frames, ffmpeg, videos, work, name != "ssv2")
        methods = {"make_shards": functools.partial(run_dataset_shards, ffmpeg, name, root, work, args.batch_videos),
                   "ceiling": ceiling}
        with pinned(args.cpu):
            timings = timed_rounds(methods, rounds)
        results[name] = {
            "timings": timings,
            "ratio_to_ceiling": timings["make_shards"]["cpu_fps"] / timings["ceiling"]["cpu_fps"],
            "wall_ratio_to_ceiling": timings["make_shards"]["wall_fps"] / timings["ceiling"]["wall_fps"],
            "clips": (list(CLIP_SIZE), list(CLIP_FRAMES)) if name == "ssv2" else DATASET_CLIPS[name],
        }
    return {"binary": binary, "datasets": results}


def print_datasets(section: dict[str, Any]) -> None:
    """Print the per-dataset table."""
    print(f"\nper dataset (make shards --workers 1 vs its one-process ceiling, one pinned core, "
          f"{section['binary']['version'][:40]}):")
    print(f"  {'dataset':9s} {'make_shards cpu fps':>20s} {'ceiling cpu fps':>16s} {'ratio':>6s} {'wall ratio':>11s}")
    for name, row in section["datasets"].items():
        timings = row["timings"]
        print(f"  {name:9s} {timings['make_shards']['cpu_fps']:20.0f} {timings['ceiling']['cpu_fps']:16.0f} "
              f"{row['ratio_to_ceiling']:6.2f} {row['wall_ratio_to_ceiling']:11.2f}")


def print_report(result: dict[str, Any]) -> None:
    """Print the tables."""
    if result["settings"]["quick"]:
        print("\nquick run: few frames, one round; fixed costs weigh more, do not judge the target from it")
    if "datasets" in result:
        print_datasets(result["datasets"])
    if result["settings"].get("datasets_only"):
        return
    for entry in result["binaries"]:
        quality = entry["quality"]
        print(f"\nffmpeg: {entry['binary']['version'][:60]} ({entry['binary']['path']})")
        print(f"output {quality['frame_size'][0]}x{quality['frame_size'][1]}; quality (PSNR vs decoded source):")
        for name, row in quality["table"].items():
            print(f"  {name:12s} {row['bytes_per_frame'] / 1000:7.1f} kB/frame  {row['psnr_db']:6.2f} dB")
        print(f"  matched ffmpeg -q:v {quality['matched_qscale']} to Pillow quality {QUALITY}")
        print(f"  {'method':14s} {'cpu fps':>8s} {'vs ceiling':>11s} {'wall fps':>9s} {'vs ceiling':>11s}")
        for name, row in entry["timings"].items():
            print(f"  {name:14s} {row['cpu_fps']:8.0f} {entry['ratio_to_ceiling'][name]:11.2f} "
                  f"{row['wall_fps']:9.0f} {entry['wall_ratio_to_ceiling'][name]:11.2f}")
        verdict = "pass" if entry["ratio_to_ceiling"]["make_shards"] >= TARGET_RATIO else "FAIL"
        print(f"  make_shards / reference: {entry['make_shards_over_reference']:.2f}x cpu, "
              f"{entry['make_shards_over_reference_wall']:.2f}x wall; target >= {TARGET_RATIO} x ceiling: {verdict}")
    scale = result["scaling"]
    base = scale["workers"]["workers_1"]["wall_fps"]
    print(f"\nworkers scaling ({scale['cores']} usable cores, machine shared):")
    for name, row in scale["workers"].items():
        print(f"  {name:12s} {row['wall_fps']:8.0f} frames/s wall  x{row['wall_fps'] / base:.2f}")
    for name, row in scale["batch_videos"].items():
        print(f"  {name:12s} {row['cpu_fps']:8.0f} frames/s per CPU second (one core)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write bench_preprocess.json."""
    args = parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    args.cpu = sorted(os.sched_getaffinity(0))[-1] if args.cpu is None else args.cpu
    per_class = args.videos_per_class or (QUICK_VIDEOS_PER_CLASS if args.quick else FULL_VIDEOS_PER_CLASS)
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as scratch:
        work = args.work_dir or Path(scratch)
        classes = QUICK_CLASSES if args.quick else NUM_CLASSES
        data_root = work / f"clips_{classes}x{per_class}"
        needs_ssv2 = not args.datasets_only or "ssv2" in args.datasets
        clips = make_clips(data_root, per_class, classes) if needs_ssv2 else []
        found = binaries()
        result = {
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "usable_cores": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
                        "pinned_cpu": args.cpu},
            "clips": {"count": len(clips), "size": list(CLIP_SIZE), "frames": list(CLIP_FRAMES), "textured": True},
            "settings": {"short_side": SHORT_SIDE, "quality": QUALITY, "rounds": rounds, "quick": args.quick,
                         "batch_videos": args.batch_videos, "datasets_only": args.datasets_only},
        }  # fmt: skip
        if args.datasets:
            result["datasets"] = dataset_rates(found[0], work, args, rounds, (data_root, clips))
        if not args.datasets_only:
            result["binaries"] = [per_binary(binary, clips, data_root, work, args, rounds)
                                  for binary in found[: 1 if args.quick else None]]
            result["scaling"] = scaling(found[0], data_root, work, args, rounds)
    print_report(result)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_preprocess_datasets.json" if args.datasets_only else "bench_preprocess.json"
    write_json_atomic(args.out / name, result)
    print(f"\nwrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
