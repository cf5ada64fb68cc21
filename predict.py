"""Predict the action in video files at any frame count: top-5 classes, the FFN branch used, the latency.

Usage::

    python predict.py --checkpoint runs/ffn/best.pt --video clip.webm other.mp4 --frames 4 8 16 \\
        [--labels CLASS_LIST] [--json predictions.json]

A video (any file ffmpeg reads: webm, mp4, mov, avi, ...) is turned into frames exactly as ``make shards`` does
(preprocess.video_decode: the same ffmpeg resize to the short side, square pixels from its sample aspect ratio,
ffmpeg's rotation, JPEG at the same quality), then into the evaluation batch as evaluate.py makes it from the
shards (data_pipeline: the same frame sampling, resize, centre crop, normalisation and decoder). So a video
scored here and the same video scored from shards give the same logits. Our checkpoints record the short side,
JPEG quality, frame rate, crop and test resize of their training data and their class names; flags override them,
and official TSM / TSM-FFN files (read through model/'s loader) need ``--labels`` for names (else class indices):
a shards manifest, SSv2's labels.json, TSM's category.txt or any file with one class per line (see
preprocess.datasets.class_lists).

An FFN at T frames uses its nearest trained branch (ties to the larger; ``branch_for``, as evaluate.py); a vanilla
TSM runs at any count, with a one-line note when the count is not the one it was trained at. The latency is the
model's forward pass alone on the current device (the median of ``--repeats`` runs after ``--warmup`` untimed
ones, synchronised on CUDA and MPS); decoding and the transform are not in it.

JSON (``--json PATH``, written atomically)::

    {"checkpoint": PATH, "settings": {...}, "videos": [{"video": PATH, "results": {"4": {"top5": [{"label": NAME,
     "prob": P}, ...], "branch": 4, "latency_ms": MS}, ...}}]}

"branch" is null for a vanilla TSM. The key "top5" is ``top<k>`` with ``--top-k k``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.atomic import write_json_atomic
from common.device import get_device
from data_pipeline import Decoder, PipelineConfig, add_loader_arguments, decode_one_video, make_decoder
from data_pipeline.augment import DEFAULT_CROP_SIZE
from data_pipeline.decode import choose_backend
from engine.cost import DEFAULT_LATENCY_RUNS, LATENCY_WARMUP_RUNS, median_forward
from engine.data import check_model_input, normalisation_of
from engine.inference import LoadedCheckpoint, load_checkpoint_network, trained_frames
from engine.precision import CHANNELS_LAST_CHOICES, PRECISIONS, resolve_channels_last, resolve_precision
from preprocess.datasets import AnnotationError
from preprocess.datasets.class_lists import read_class_list
from preprocess.ffmpeg_tools import FfmpegNotFoundError, resolve_ffmpeg
from preprocess.video_decode import DecodedVideo, decode_videos
from shard_format import DEFAULT_QUALITY, DEFAULT_SHORT_SIDE, QUALITY_RANGE

DEFAULT_FRAMES = (4, 8, 16)
# Loader options with a flag here (the crop's default comes from the checkpoint, else 224).
LOADER_FLAGS = ("decode", "crop_size", "test_resize", "short_video")
DEFAULT_TOP_K = 5
MS_PER_S = 1000.0
PROB_SCALE = 1e6  # probabilities keep 6 decimals
OFFICIAL_SEGMENTS = re.compile(r"segment(\d+)")  # official TSM release names: ..._segment8_e50.pth
VIDEO_HINT = "give a video file ffmpeg can read (webm, mp4, mov, avi, ...)"


@dataclasses.dataclass
class Predictor:
    """Everything the per-video work needs: the model, where it runs, the transform and the class names."""

    checkpoint: Path
    loaded: LoadedCheckpoint
    device: torch.device
    precision: str
    config: PipelineConfig
    decoder: Decoder
    short_side: int
    jpeg_quality: int
    fps: float | None
    names: list[str] | None
    trained: list[int]

    @property
    def is_ffn(self) -> bool:
        """True for a TSM-FFN (branches per trained frame count)."""
        return bool(getattr(self.loaded.network, "trained_frames", None))


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="train.py's best.pt / last.pt or an "
                        "official TSM / TSM-FFN file")
    parser.add_argument("--video", type=Path, nargs="+", required=True, help="one or more video files")
    parser.add_argument("--frames", type=int, nargs="+", default=list(DEFAULT_FRAMES), help="frame counts")
    parser.add_argument("--labels", type=Path, default=None,
                        help="class names: a shards manifest, SSv2's labels.json, a JSON list, or a text file with one "
                             "class per line or 'name index' lines (default: the names in the checkpoint, else "
                             "class indices)")
    parser.add_argument("--json", type=Path, default=None, help="also write the predictions to this JSON file")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    add_loader_arguments(parser, LOADER_FLAGS, defaults={"crop_size": None})
    parser.add_argument("--short-side", type=int, default=None, help="frames' short side before the transform "
                        f"(default: the training shards', else {DEFAULT_SHORT_SIDE}; 0: native size)")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample videos to this frame rate (default: the training shards', else every frame)")
    parser.add_argument("--jpeg-quality", type=int, default=None,
                        help=f"JPEG quality of the frames (default: the training shards', else {DEFAULT_QUALITY})")
    parser.add_argument("--arch", default=None, help="official checkpoints: the model, when not the one the file's "
                        "layout gives")
    parser.add_argument("--trained-frames", type=int, nargs="+", default=None,
                        help="frame count an official TSM was trained at (default: the file name's segmentN)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow full unpickling of a checkpoint the safe loader refuses (trusted files only)")
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--channels-last", choices=CHANNELS_LAST_CHOICES, default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=DEFAULT_LATENCY_RUNS,
                        help="timed forwards per video and count (the latency is their median)")
    parser.add_argument("--warmup", type=int, default=LATENCY_WARMUP_RUNS,
                        help="untimed forwards per count before the first video is timed")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.frames) < 1:
        parser.error("--frames: give positive frame counts, e.g. 4 8 16")
    if args.top_k < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--top-k and --repeats must be >= 1, --warmup >= 0")
    if args.short_side is not None and args.short_side < 0:
        parser.error("--short-side must be >= 0 (0 keeps the native size)")
    if args.fps is not None and not args.fps > 0:
        parser.error("--fps must be positive (omit it to keep every frame)")
    if args.jpeg_quality is not None and not QUALITY_RANGE[0] <= args.jpeg_quality <= QUALITY_RANGE[1]:
        parser.error(f"--jpeg-quality: choose {QUALITY_RANGE[0]}-{QUALITY_RANGE[1]} (IJG scale)")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1 (omit it for torch's default)")
    if args.trained_frames is not None and min(args.trained_frames) < 1:
        parser.error("--trained-frames: give positive frame counts, e.g. 8")
    if args.json is not None and args.json.is_dir():
        parser.error(f"--json {args.json}: is a directory; give a file name, e.g. {args.json / 'predictions.json'}")
    args.frames = sorted(set(args.frames))
    return args


def first_set(*values: Any) -> Any:
    """The first value that is not None (None when all are)."""
    return next((value for value in values if value is not None), None)


def read_names(args: argparse.Namespace, loaded: LoadedCheckpoint) -> list[str] | None:
    """Class names: --labels (its class count must match the classifier), else the checkpoint's, else None."""
    num_classes = int(loaded.network.config["num_classes"])
    if args.labels is None:
        names = loaded.inference.get("class_names")
        return list(names) if names and len(names) == num_classes else None
    if not args.labels.is_file():
        raise SystemExit(f"{args.labels}: no such labels file; check --labels (a shards manifest, SSv2's "
                         "labels.json or a class list)")
    try:
        names = read_class_list(args.labels)
    except AnnotationError as error:
        raise SystemExit(str(error)) from error
    if len(names) != num_classes:
        raise SystemExit(f"{args.labels}: {len(names)} classes but {args.checkpoint} has {num_classes} outputs; "
                         "give the class list the model was trained with")
    return names


def official_trained_frames(loaded: LoadedCheckpoint, path: Path) -> list[int]:
    """An official TSM's training frame count from its release file name (``segmentN``), [] when absent."""
    match = OFFICIAL_SEGMENTS.search(path.name) if loaded.official else None
    return [int(match.group(1))] if match else []


def chosen_device(name: str | None) -> torch.device:
    """The device named by --device (checked to exist), else common.device.get_device(); a bad name is one line."""
    try:
        return get_device(name)
    except ValueError as error:
        raise SystemExit(f"predict.py: {error}") from error


def chosen_trained_frames(args: argparse.Namespace, loaded: LoadedCheckpoint) -> list[int]:
    """The trained frame counts ([] when unknown).

    An FFN's are its branches (--trained-frames is ignored, with a one-line note); a vanilla TSM's are
    --trained-frames, else the checkpoint's record, else an official file name's segmentN.
    """
    branches = getattr(loaded.network, "trained_frames", None)
    if branches:
        if args.trained_frames:
            listed = "/".join(str(frames) for frames in sorted(branches))
            print(f"note: --trained-frames is ignored for an FFN: its branches ({listed}) are its trained frame "
                  "counts", flush=True)
        return sorted(int(frames) for frames in branches)
    return sorted(args.trained_frames or trained_frames(loaded) or official_trained_frames(loaded, args.checkpoint))


def prepare(args: argparse.Namespace) -> Predictor:
    """Load the checkpoint and set up the device, the transform, the decoder and the class names."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = chosen_device(args.device)
    precision = resolve_precision(args.precision, device)
    channels_last = resolve_channels_last(args.channels_last, device)
    loaded = load_checkpoint_network(args.checkpoint, args.arch, channels_last, args.trust_pickle,
                                     flag="--checkpoint", script="predict.py")
    loaded.network.to(device)
    record, settings = loaded.inference, loaded.settings
    crop_size = first_set(args.crop_size, record.get("crop_size"), settings.get("crop_size"), DEFAULT_CROP_SIZE)
    test_resize = first_set(args.test_resize, record.get("test_resize"), settings.get("test_resize"))
    try:
        check_model_input(loaded.network, args.frames, crop_size)
    except ValueError as error:
        raise SystemExit(f"{args.checkpoint}: {error}") from error
    normalisation = normalisation_of(loaded.network)
    try:
        backend = choose_backend(args.decode, device)
        config = PipelineConfig(frames=tuple(args.frames), batch_size=1, train=False, decode=backend, device=device,
                                num_workers=0, crop_size=crop_size, test_resize=test_resize,
                                short_video=args.short_video, multi_scale=False, normalisation=normalisation)
    except ValueError as error:
        raise SystemExit(f"predict.py: {error}") from error
    decoder = make_decoder(backend, device, sum(args.frames), normalisation)
    return Predictor(
        checkpoint=args.checkpoint, loaded=loaded, device=device, precision=precision, config=config,
        decoder=decoder,
        short_side=int(first_set(args.short_side, record.get("short_side"), DEFAULT_SHORT_SIDE)),
        jpeg_quality=int(first_set(args.jpeg_quality, record.get("jpeg_quality"), DEFAULT_QUALITY)),
        fps=first_set(args.fps, record.get("fps")),
        names=read_names(args, loaded), trained=chosen_trained_frames(args, loaded),
    )


def check_files_exist(paths: Sequence[Path]) -> None:
    """Stop with one line at the first path that is not a file (before any model is loaded)."""
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: no such video; check --video")


def decode_files(
    paths: Sequence[Path], short_side: int, quality: int, fps: float | None = None
) -> list[DecodedVideo]:
    """Decode every video file to JPEG frames as ``make shards`` does; the first bad file ends the run (one line)."""
    check_files_exist(paths)
    try:
        ffmpeg = resolve_ffmpeg().path
    except FfmpegNotFoundError as error:
        raise SystemExit(str(error)) from error
    videos = decode_videos(ffmpeg, list(paths), short_side, quality, max(1, len(paths)), fps)
    for video in videos:
        if video.error is not None:
            raise SystemExit(f"{video.path}: {video.error}; {VIDEO_HINT}")
    return videos


def video_batch(predictor: Predictor, video: DecodedVideo) -> dict[str, Any]:
    """The evaluation batch of one decoded video on the predictor's device (the loader's transform)."""
    try:
        return decode_one_video(video.frames, video.width, video.height, predictor.config, predictor.decoder,
                                video_id=video.path.name)
    except ValueError as error:
        raise SystemExit(f"{video.path}: {error}; {VIDEO_HINT}") from error


def forward_by_frames(predictor: Predictor, batch: dict[str, Any], requested_frames: Sequence[int], repeats: int,
                      warmup: int) -> dict[int, tuple[torch.Tensor, float]]:
    """Run the model at every frame count: {T: (logits of the video (C,), median forward seconds)}."""
    results = {}
    for frames in requested_frames:
        logits, seconds = median_forward(predictor.loaded.network, batch["videos"][frames], predictor.device,
                                         predictor.precision, repeats, warmup)
        results[frames] = (logits[0].float().cpu(), seconds)
    return results


def top_classes(logits: torch.Tensor, names: list[str] | None, top_k: int) -> list[dict[str, Any]]:
    """The top-k classes of one video's logits, most probable first: [{"label": name or index, "prob": P}].

    Probabilities are rounded down to 6 decimals, so the listed ones never add up to more than 1.
    """
    probabilities = torch.softmax(logits.double(), dim=0)
    values, indices = probabilities.topk(min(top_k, probabilities.numel()))
    return [
        {"label": names[index] if names else str(index), "prob": math.floor(value * PROB_SCALE) / PROB_SCALE}
        for value, index in zip(values.tolist(), indices.tolist())
    ]


def tsm_note(predictor: Predictor, frames: int) -> str | None:
    """The one-line note for a vanilla TSM at a frame frames it was not trained at (None otherwise)."""
    if predictor.is_ffn:
        return None
    if not predictor.trained:
        return (f"note: {frames} frames on a vanilla TSM whose training frame frames is unknown "
                "(pass --trained-frames); no branch to switch to")
    if frames in predictor.trained:
        return None
    trained = "/".join(str(value) for value in predictor.trained)
    return (f"note: this vanilla TSM was trained at {trained} frames; at {frames} it runs the same weights "
            "(no branch for other framess: expect lower accuracy)")


def settings_record(predictor: Predictor, args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings for the JSON (device, transform, frames, what the latency measures)."""
    return {
        "device": str(predictor.device), "precision": predictor.precision, "decode": predictor.config.decode,
        "frames": list(args.frames), "trained_frames": predictor.trained, "ffn": predictor.is_ffn,
        "short_side": predictor.short_side, "jpeg_quality": predictor.jpeg_quality, "fps": predictor.fps,
        "crop_size": predictor.config.crop_size, "test_resize": predictor.config.test_resize,
        "latency": f"forward pass alone, median of {args.repeats} after {args.warmup} warm-up, per video",
    }


def print_video(path: Path, results: dict[str, Any], top_key: str, device: torch.device) -> None:
    """Print one video's predictions per frame count."""
    print(path, flush=True)
    for frames, result in results.items():
        branch = "none (vanilla TSM)" if result["branch"] is None else result["branch"]
        print(f"  {frames} frames: branch {branch}, forward {result['latency_ms']:.1f} ms on {device}")
        for rank, entry in enumerate(result[top_key], start=1):
            print(f"    {rank}. {100.0 * entry['prob']:6.2f}%  {entry['label']}")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Predict every video at every frame count; print, write the JSON when asked, return the report."""
    check_files_exist(args.video)
    predictor = prepare(args)
    videos = decode_files(args.video, predictor.short_side, predictor.jpeg_quality, predictor.fps)
    top_key = f"top{args.top_k}"
    print(f"latency: the model's forward pass alone on {predictor.device} ({predictor.precision}), median of "
          f"{args.repeats} runs after {args.warmup} warm-up; decoding and the transform are not timed", flush=True)
    for frames in args.frames:
        note = tsm_note(predictor, frames)
        if note:
            print(note, flush=True)
    entries, warmup = [], args.warmup
    for video in videos:
        outputs = forward_by_frames(predictor, video_batch(predictor, video), args.frames, args.repeats, warmup)
        warmup = 0  # the first video warmed every frame count up
        results = {
            str(frames): {
                top_key: top_classes(logits, predictor.names, args.top_k),
                "branch": predictor.loaded.network.branch_for(frames),
                "latency_ms": round(seconds * MS_PER_S, 3),
            }
            for frames, (logits, seconds) in outputs.items()
        }
        print_video(video.path, results, top_key, predictor.device)
        entries.append({"video": str(video.path), "results": results})
    report = {"checkpoint": str(args.checkpoint), "settings": settings_record(predictor, args), "videos": entries}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.json, report, sort_keys=False)  # frame counts stay in numeric order
        print(f"wrote {args.json}", flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
