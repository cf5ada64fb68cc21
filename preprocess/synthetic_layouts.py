"""Synthetic datasets in the layouts of SSv1, Kinetics-400, HMDB51 and TSM frame lists (the SSv2 one is synthetic.py).

The clips are those of preprocess/synthetic.py (same plan, same rendering, same classes: the label needs temporal
order); only the files around them change, so every dataset module of `make shards` is tested end to end on real
files:

- ``ssv1``: JPEG frame folders ``20bn-something-something-v1/<id>/00001.jpg`` and the 20BN CSVs (the label file
  in class order, which is not sorted: `make shards` sorts it as TSM does);
- ``k400``: H.264 mp4 files (libx264) of varied sizes and frame rates (24, 25, 30 fps), train/ in class folders,
  val/ and test/ flat, annotations/{train,val,test}.csv; one train clip missing, one val clip missing, one train
  clip truncated (corrupt) and one corrupt train clip whose good copy is in replacement/;
- ``hmdb51``: MPEG-4 part 2 .avi files in class folders and testTrainMulti_7030_splits/ with three splits (about
  60% train, 30% test, the rest unused, drawn per split); one listed video missing;
- ``tsm-list``: frame folders ``<class name>/<id>/img_00001.jpg`` (class names hold spaces), train_list.txt,
  val_list.txt, test_list.txt (unlabelled) and categories.txt; one listed folder lacks its last frame.

``<root>/generator.json`` records the settings and, per video (keyed by its shard id), the split it lands in, its
class name, its frame count and whether it was made unusable on purpose ("status": ok, missing, corrupt,
missing_frame; replaced: a corrupt file whose good copy is in replacement/). ``--force`` replaces only what the
generator writes (its folders and files), never anything else under the root.
"""

from __future__ import annotations

import base64
import concurrent.futures
import csv
import hashlib
import io
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_file, write_json_atomic
from preprocess.datasets.base import make_video_id
from preprocess.datasets.ssv2 import template_key
from preprocess.synthetic import (
    ALL_TEMPLATES,
    DEFAULT_SPLIT,
    ClipPlan,
    DatasetExistsError,
    clip_rng,
    default_workers,
    encode_video,
    plan_dataset,
    render_clip,
)

LOGGER = logging.getLogger("preprocess.synthetic_layouts")

LAYOUTS = ("ssv1", "k400", "hmdb51", "tsm-list")
GENERATOR_FILE = "generator.json"
JPEG_QUALITY = 90
STATUS_OK, STATUS_MISSING, STATUS_CORRUPT = "ok", "missing", "corrupt"
STATUS_MISSING_FRAME, STATUS_REPLACED = "missing_frame", "replaced"
CORRUPT_FRACTION = 0.4
K400_FRAME_RATES = (24, 25, 30)
HMDB_FPS = 30
SSV1_FPS = 12
H264_ARGS = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "18", "-threads", "1",
             "-fflags", "+bitexact", "-flags", "+bitexact")
MPEG4_ARGS = ("-c:v", "mpeg4", "-q:v", "3", "-threads", "1", "-fflags", "+bitexact", "-flags", "+bitexact")
HMDB_TRAIN_SHARE, HMDB_TEST_SHARE = 0.6, 0.3
HMDB_SPLIT_IDS = (1, 2, 3)
TSM_PATTERN = "img_{:05d}.jpg"
SSV1_PATTERN = "{:05d}.jpg"
YOUTUBE_ID_CHARACTERS = 11
CLIP_SECONDS = 10


def class_name(template_index: int) -> str:
    """The class name of a template in the 20BN label files (its text without brackets)."""
    return template_key(ALL_TEMPLATES[template_index])


def render(plan: ClipPlan, settings: dict[str, Any], width: int, height: int) -> np.ndarray:
    """The clip's frames (T, H, W, 3), rendered exactly as preprocess.synthetic renders it."""
    return render_clip(plan.template_index, clip_rng(settings["seed"], plan.template_index, plan.index),
                       plan.num_frames, width, height, settings["textured"])


def even(value: int) -> int:
    """The value rounded down to an even number (4:2:0 video needs even sizes), at least 2."""
    return max(2, value - value % 2)


def write_jpeg_frames(frames: np.ndarray, folder: Path, pattern: str) -> None:
    """Write every frame as a JPEG file numbered from 1 (Pillow, quality 90)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, start=1):
        encoded = io.BytesIO()
        Image.fromarray(frame).save(encoded, "JPEG", quality=JPEG_QUALITY)
        (folder / pattern.format(number)).write_bytes(encoded.getvalue())


def write_text(path: Path, lines: Sequence[str]) -> None:
    """Write lines atomically (UTF-8, newline-terminated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "w") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def write_csv(path: Path, rows: Sequence[Sequence[Any]]) -> None:
    """Write CSV rows atomically (the csv module quotes a field holding a comma)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "w") as handle:
        handle.write(buffer.getvalue())


def truncate(path: Path) -> None:
    """Keep the first 40% of a file's bytes (a cut download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * CORRUPT_FRACTION)])


def youtube_id(seed: int, video_id: str) -> str:
    """An 11-character YouTube-like id ([A-Za-z0-9_-]) drawn from the seed and the clip id."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:YOUTUBE_ID_CHARACTERS]


def run_parallel(jobs: Sequence[Callable[[], None]], workers: int) -> None:
    """Run independent jobs on a thread pool (the encoding runs in ffmpeg processes)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def record(plan: ClipPlan, split: str, name: str, status: str = STATUS_OK, **extra: Any) -> dict[str, Any]:
    """One video of generator.json."""
    return {"split": split, "class": name, "num_frames": plan.num_frames, "status": status, **extra}


# SSv1


def write_ssv1(root: Path, plans: list[ClipPlan], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """SSv1: JPEG frame folders and the 20BN CSVs; returns the per-video records."""
    frames_root = root / "20bn-something-something-v1"
    jobs = [lambda plan=plan: write_jpeg_frames(render(plan, settings, settings["width"], settings["height"]),
                                                frames_root / plan.video_id, SSV1_PATTERN) for plan in plans]
    run_parallel(jobs, settings["workers"])
    names = list(dict.fromkeys(class_name(plan.template_index) for plan in sorted(plans, key=lambda p: p.label)))
    write_text(root / "something-something-v1-labels.csv", names)
    for split in ("train", "validation", "test"):
        chosen = [plan for plan in plans if plan.split == split]
        lines = [plan.video_id if split == "test" else f"{plan.video_id};{class_name(plan.template_index)}"
                 for plan in chosen]
        write_text(root / f"something-something-v1-{split}.csv", lines)
    return {plan.video_id: record(plan, plan.split, class_name(plan.template_index)) for plan in plans}


# Kinetics-400


def k400_class(plan: ClipPlan) -> str:
    """A Kinetics-style class name: lower case words."""
    return class_name(plan.template_index).lower()


def write_k400(root: Path, plans: list[ClipPlan], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Kinetics-400 (CVDF layout): mp4 files of varied sizes and frame rates, CSVs, missing and corrupt clips."""
    sizes = [(even(settings["width"]), even(settings["height"])),
             (even(settings["width"] + 8), even(settings["height"])),
             (even(settings["height"]), even(settings["width"]))]  # fmt: skip
    folders = {"train": "train", "validation": "val", "test": "test"}
    rows: dict[str, list[list[Any]]] = {split: [] for split in folders}
    records, jobs = {}, []
    statuses = k400_statuses(plans)
    for position, plan in enumerate(plans):
        width, height = sizes[position % len(sizes)]
        fps = settings["fps"] or K400_FRAME_RATES[position % len(K400_FRAME_RATES)]
        start = int(np.random.default_rng([settings["seed"], int(plan.video_id)]).integers(0, 300))
        name = k400_class(plan)
        clip = f"{youtube_id(settings['seed'], plan.video_id)}_{start:06d}_{start + CLIP_SECONDS:06d}"
        folder = root / folders[plan.split] / (name.replace(" ", "_") if plan.split == "train" else "")
        rows[plan.split].append([name, clip[:YOUTUBE_ID_CHARACTERS], start, start + CLIP_SECONDS, folders[plan.split]])
        status = statuses.get(plan.video_id, STATUS_OK)
        records[clip] = record(plan, plan.split, name, status, width=width, height=height, fps=fps)
        if status != STATUS_MISSING:
            jobs.append(lambda plan=plan, path=folder / f"{clip}.mp4", size=(width, height), fps=fps, status=status:
                        write_k400_clip(root, plan, path, size, fps, status, settings))
    run_parallel(jobs, settings["workers"])
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    for split, folder in folders.items():
        write_csv(root / "annotations" / f"{folder}.csv", [header, *rows[split]])
    return records


def k400_statuses(plans: list[ClipPlan]) -> dict[str, str]:
    """Which clips are made unusable: train's first missing, second corrupt, third replaced; val's first missing."""
    train = [plan.video_id for plan in plans if plan.split == "train"]
    validation = [plan.video_id for plan in plans if plan.split == "validation"]
    chosen = dict(zip(train, (STATUS_MISSING, STATUS_CORRUPT, STATUS_REPLACED)))
    if validation:
        chosen[validation[0]] = STATUS_MISSING
    return chosen


def write_k400_clip(root: Path, plan: ClipPlan, path: Path, size: tuple[int, int], fps: int, status: str,
                    settings: dict[str, Any]) -> None:
    """Encode one clip as H.264 mp4; a corrupt one is cut, a replaced one is cut and its good copy put in replacement/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = render(plan, settings, *size)
    encode_video(frames, path, fps, settings["ffmpeg_path"], H264_ARGS, "mp4")
    if status == STATUS_REPLACED:
        replacement = root / "replacement" / "replacement_for_corrupted_k400" / path.name
        replacement.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, replacement)
    if status in (STATUS_CORRUPT, STATUS_REPLACED):
        truncate(path)


# HMDB51


def hmdb_class(plan: ClipPlan) -> str:
    """An HMDB51-style class folder name: lower case words joined by underscores."""
    return class_name(plan.template_index).lower().replace(" ", "_")


def hmdb_video_name(plan: ClipPlan) -> str:
    """An HMDB51-style file name: source, class, then the appearance codes and a clip number."""
    return f"Clip{int(plan.video_id):04d}_{hmdb_class(plan)}_f_cm_np1_fr_med_{plan.index}.avi"


def hmdb_flags(plans: list[ClipPlan], seed: int, split_id: int) -> dict[str, str]:
    """Each video's flag in one official split: about 60% "1" (train), 30% "2" (test), the rest "0"."""
    flags = {}
    for label in sorted({plan.label for plan in plans}):
        members = [plan for plan in plans if plan.label == label]
        order = np.random.default_rng([seed, split_id, label]).permutation(len(members))
        train = int(round(len(members) * HMDB_TRAIN_SHARE))
        test = int(round(len(members) * HMDB_TEST_SHARE))
        for rank, position in enumerate(order):
            flags[members[position].video_id] = "1" if rank < train else "2" if rank < train + test else "0"
    return flags


def write_hmdb51(root: Path, plans: list[ClipPlan], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """HMDB51: avi files in class folders, the three split files per class, one listed video missing."""
    flags = {split_id: hmdb_flags(plans, settings["seed"], split_id) for split_id in HMDB_SPLIT_IDS}
    missing = plans[0].video_id if plans else None
    fps = settings["fps"] or HMDB_FPS
    size = (even(settings["width"]), even(settings["height"]))
    jobs = [lambda plan=plan: encode_video(render(plan, settings, *size),
                                           root / hmdb_class(plan) / hmdb_video_name(plan), fps,
                                           settings["ffmpeg_path"], MPEG4_ARGS, "avi")
            for plan in plans if plan.video_id != missing]
    for plan in plans:
        (root / hmdb_class(plan)).mkdir(parents=True, exist_ok=True)
    run_parallel(jobs, settings["workers"])
    for split_id in HMDB_SPLIT_IDS:
        for name in sorted({hmdb_class(plan) for plan in plans}):
            lines = [f"{hmdb_video_name(plan)} {flags[split_id][plan.video_id]} " for plan in plans
                     if hmdb_class(plan) == name]
            write_text(root / "testTrainMulti_7030_splits" / f"{name}_test_split{split_id}.txt", lines)
    split_of = {"1": "train", "2": "validation", "0": None}
    return {
        make_video_id(Path(hmdb_video_name(plan)).stem): record(
            plan, "", hmdb_class(plan), STATUS_MISSING if plan.video_id == missing else STATUS_OK, fps=fps,
            split_by_id={str(split_id): split_of[flags[split_id][plan.video_id]] for split_id in HMDB_SPLIT_IDS},
        )
        for plan in plans
    }


# TSM lists


def tsm_folder(plan: ClipPlan) -> str:
    """A frame folder path of a TSM list: the class name (with spaces) and the clip id."""
    return f"{class_name(plan.template_index)}/{plan.video_id}"


def write_tsm_list(root: Path, plans: list[ClipPlan], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """TSM-style frame folders, list files and categories.txt; one listed folder lacks its last frame."""
    damaged = next((plan.video_id for plan in plans if plan.split == "validation"), None)
    run_parallel([lambda plan=plan: write_jpeg_frames(render(plan, settings, settings["width"], settings["height"]),
                                                      root / tsm_folder(plan), TSM_PATTERN)
                  for plan in plans], settings["workers"])
    if damaged is not None:
        plan = next(plan for plan in plans if plan.video_id == damaged)
        (root / tsm_folder(plan) / TSM_PATTERN.format(plan.num_frames)).unlink()
    names = list(dict.fromkeys(class_name(plan.template_index) for plan in sorted(plans, key=lambda p: p.label)))
    write_text(root / "categories.txt", names)
    for split, file_name in (("train", "train_list.txt"), ("validation", "val_list.txt"), ("test", "test_list.txt")):
        write_text(root / file_name, [
            f"{tsm_folder(plan)} {plan.num_frames}" + ("" if split == "test" else f" {plan.label}")
            for plan in plans if plan.split == split
        ])  # fmt: skip
    return {
        make_video_id(tsm_folder(plan)): record(plan, plan.split, class_name(plan.template_index),
                                 STATUS_MISSING_FRAME if plan.video_id == damaged else STATUS_OK)
        for plan in plans
    }


def own_entries(dataset: str, plans: list[ClipPlan]) -> list[str]:
    """The top-level names a layout writes under its root (what --force may replace)."""
    fixed = {
        "ssv1": ["20bn-something-something-v1", *(f"something-something-v1-{name}.csv"
                                                  for name in ("labels", "train", "validation", "test"))],
        "k400": ["train", "val", "test", "annotations", "replacement"],
        "hmdb51": ["testTrainMulti_7030_splits", *sorted({hmdb_class(plan) for plan in plans})],
        "tsm-list": ["categories.txt", "train_list.txt", "val_list.txt", "test_list.txt",
                     *sorted({class_name(plan.template_index) for plan in plans})],
    }
    return [GENERATOR_FILE, *fixed[dataset]]


def clear(root: Path, names: Sequence[str]) -> None:
    """Remove the generator's own files and folders under `root` (completion marker first)."""
    for name in names:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


WRITERS: dict[str, Callable[[Path, list[ClipPlan], dict[str, Any]], dict[str, dict[str, Any]]]] = {
    "ssv1": write_ssv1, "k400": write_k400, "hmdb51": write_hmdb51, "tsm-list": write_tsm_list,
}


def generate_layout(
    dataset: str,
    root: str | Path,
    videos_per_class: int,
    num_frames: int | tuple[int, int],
    width: int = 32,
    height: int = 32,
    fps: int | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT,
    seed: int = 0,
    classes: int | Sequence[int] | None = None,
    force: bool = False,
    workers: int | None = None,
    textured: bool = False,
) -> dict[str, Any]:
    """Write a synthetic dataset in the layout of `dataset` under `root`; return the generator.json record.

    The arguments are those of preprocess.synthetic.generate_dataset (`textured`: realistic JPEG sizes, for the
    benchmarks); `fps` None gives each layout its own rates.

    Raises
    ------
    DatasetExistsError
        If `root` holds files and `force` is False.
    ValueError
        On an unknown layout or bad settings (those of preprocess.synthetic.plan_dataset).
    """
    from preprocess.ffmpeg_tools import resolve_ffmpeg

    if dataset not in WRITERS:
        raise ValueError(f"--dataset {dataset}: synthetic layouts are ssv2 and {', '.join(LAYOUTS)}")
    started = time.perf_counter()
    root = Path(root)
    plans = plan_dataset(videos_per_class, num_frames, split_fractions, seed, classes)
    names = own_entries(dataset, plans)
    if any((root / name).exists() for name in names):
        if not force:
            raise DatasetExistsError(f"{root}: already holds a {dataset} dataset; choose another --root or pass "
                                     "--force")
        clear(root, names)
    root.mkdir(parents=True, exist_ok=True)
    ffmpeg = resolve_ffmpeg() if dataset in ("k400", "hmdb51") else None
    settings = {"seed": seed, "width": width, "height": height, "fps": fps, "workers": workers or default_workers(),
                "ffmpeg_path": ffmpeg.path if ffmpeg else None, "textured": textured}
    videos = WRITERS[dataset](root, plans, settings)
    summary = {
        "dataset": dataset, "root": str(root), "videos_per_class": videos_per_class, "seed": seed,
        "width": width, "height": height, "fps": fps, "textured": textured, "num_classes": len({plan.label for plan in plans}),
        "num_videos": len(plans), "ffmpeg": ffmpeg.as_dict() if ffmpeg else None,
        "seconds": round(time.perf_counter() - started, 3), "videos": videos,
    }
    write_json_atomic(root / GENERATOR_FILE, summary)
    return summary
