"""Kinetics-400 in the layout of the CVDF release: mp4 files per split and the annotation CSVs.

Layout::

    <root>/annotations/train.csv   label,youtube_id,time_start,time_end,split  (one row per clip)
    <root>/annotations/val.csv     same
    <root>/annotations/test.csv    same (an empty label: the clip is unlabelled, label -1)
    <root>/train/<youtube_id>_<start:06d>_<end:06d>.mp4    flat, or in class folders train/<class>/...
    <root>/val/..., <root>/test/...
    <root>/replacement/...         optional: files found here replace those of the split folders (the CVDF
                                   release's replacements for corrupted videos, any folder depth)

The split ``val`` becomes ``validation`` in the shards. Class names: the labels of annotations/train.csv, sorted
(the convention of the TSM and MMAction2 lists). A clip whose file is missing or cannot be decoded is skipped with
its reason (real Kinetics has both); the run completes. Every frame is stored by default (official parity);
``--fps N`` resamples at shard time.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from preprocess.datasets.base import (
    REASON_UNKNOWN_CLASS,
    SOURCE_VIDEO,
    AnnotationError,
    Dataset,
    DatasetIndex,
    VideoEntry,
    index_video_files,
    mark_duplicates,
    read_text_lines,
)
from shard_format import SPLITS, TEST_LABEL

ANNOTATIONS_SUBDIR = "annotations"
REPLACEMENT_SUBDIR = "replacement"
FOLDER_OF_SPLIT = {"train": "train", "validation": "val", "test": "test"}
HEADER = ("label", "youtube_id", "time_start", "time_end", "split")
REQUIRED_COLUMNS = HEADER[:4]
UNLABELLED_COLUMNS = HEADER[1:4]  # a test CSV may have no label column
VIDEO_SUFFIX = ".mp4"
CLASS_FOLDER_DEPTH = 1
REPLACEMENT_DEPTH = 4
LABELLED_SPLITS = ("train", "validation")
FORBIDDEN_ID_CHARACTERS = (".", "/", "\\")
DEFAULT_SHORT_SIDE = 256


def annotation_file(data_root: Path, split: str) -> Path:
    """Return the CSV of a split (annotations/train.csv, val.csv, test.csv)."""
    return Path(data_root) / ANNOTATIONS_SUBDIR / f"{FOLDER_OF_SPLIT[split]}.csv"


def clip_id(youtube_id: str, time_start: int, time_end: int) -> str:
    """Return the CVDF file stem of a clip: ``<youtube_id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def _seconds(path: Path, line: int, column: str, text: str) -> int:
    """Parse a whole number of seconds ("14" or "14.0"); AnnotationError naming the line otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or value != int(value):
        raise AnnotationError(f"{path}:{line}: {column} {text!r} is not a whole number of seconds; fix that row")
    return int(value)


def read_rows(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> list[tuple[int, dict[str, str]]]:
    """Read an annotation CSV; return (line number, row) per clip (a missing "label" column reads as empty labels).

    Raises
    ------
    AnnotationError
        When the file is missing, the header lacks a column, or a row has another number of fields.
    """
    lines = read_text_lines(path, "the Kinetics annotation CSV (CVDF release)")
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or any(column not in [name.strip() for name in header] for column in required):
        raise AnnotationError(f"{path}:1: expected the header {','.join(HEADER)!r}, got {','.join(header or [])!r}; "
                              "use the CVDF release's annotation file")
    header = [name.strip() for name in header]
    rows = []
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            raise AnnotationError(f"{path}:{reader.line_num}: {len(fields)} fields, the header has {len(header)} "
                                  f"({','.join(header)}); fix that row (quote a label holding a comma)")
        row = {"label": ""} | {name: field.strip() for name, field in zip(header, fields)}
        rows.append((reader.line_num, row))
    return rows


def read_class_names(path: Path) -> list[str]:
    """Return the sorted labels of the training CSV (every row must have one)."""
    names = set()
    for line, row in read_rows(path):
        if not row["label"]:
            raise AnnotationError(f"{path}:{line}: empty label in the training CSV; fix that row")
        names.add(row["label"])
    if not names:
        raise AnnotationError(f"{path}: no clip; restore the training CSV (its labels are the class names)")
    return sorted(names)


def _checked_id(path: Path, line: int, youtube_id: str) -> str:
    """A YouTube id usable in a file name and a shard key; AnnotationError naming the line otherwise."""
    if not youtube_id or any(character in youtube_id for character in FORBIDDEN_ID_CHARACTERS) or (
        len(youtube_id.split()) != 1
    ):
        raise AnnotationError(f"{path}:{line}: youtube_id {youtube_id!r} is empty or holds '.', '/', '\\' or "
                              "spaces; fix that row")
    return youtube_id


def read_split(path: Path, split: str, names: Sequence[str], files: dict[str, Path], folder: Path) -> list[VideoEntry]:
    """Read one split's CSV in file order; each entry's source is its file (or the expected flat path if missing).

    Raises
    ------
    AnnotationError
        On a malformed row, or an empty label in a labelled split (train, validation).
    """
    index = {name: position for position, name in enumerate(names)}
    entries = []
    for line, row in read_rows(path, REQUIRED_COLUMNS if split in LABELLED_SPLITS else UNLABELLED_COLUMNS):
        youtube_id = _checked_id(path, line, row["youtube_id"])
        video_id = clip_id(youtube_id, _seconds(path, line, "time_start", row["time_start"]),
                           _seconds(path, line, "time_end", row["time_end"]))
        source = str(files.get(video_id, folder / f"{video_id}{VIDEO_SUFFIX}"))
        label_text = row["label"]
        if not label_text:
            if split in LABELLED_SPLITS:
                raise AnnotationError(f"{path}:{line}: empty label in the {split} CSV; fix that row")
            entries.append(VideoEntry(video_id, split, TEST_LABEL, "", source=source))
        elif label_text not in index:
            reason = f"{REASON_UNKNOWN_CLASS}: {label_text!r} (not a label of annotations/train.csv)"
            entries.append(VideoEntry(video_id, split, TEST_LABEL, label_text, skip_reason=reason, source=source))
        else:
            entries.append(VideoEntry(video_id, split, index[label_text], label_text, source=source))
    return entries


def video_files(data_root: Path, split: str) -> dict[str, Path]:
    """Map each clip id to its file: the split folder (flat or class folders), then replacement/ overriding."""
    files = index_video_files(Path(data_root) / FOLDER_OF_SPLIT[split], CLASS_FOLDER_DEPTH)
    files.update(index_video_files(Path(data_root) / REPLACEMENT_SUBDIR, REPLACEMENT_DEPTH))
    return files


def read_dataset(data_root: Path, splits: Sequence[str], args: argparse.Namespace | None = None) -> DatasetIndex:
    """Read the annotation CSVs of the requested splits (the training CSV always, for the class names)."""
    data_root = Path(data_root)
    names = read_class_names(annotation_file(data_root, "train"))
    ordered = [split for split in SPLITS if split in splits]
    entries = {
        split: read_split(annotation_file(data_root, split), split, names, video_files(data_root, split),
                          data_root / FOLDER_OF_SPLIT[split])
        for split in ordered
    }  # fmt: skip
    entries = mark_duplicates(entries, lambda split: f"{ANNOTATIONS_SUBDIR}/{FOLDER_OF_SPLIT[split]}.csv")
    files = {split: str(annotation_file(data_root, split)) for split in ordered}
    return DatasetIndex(names, entries, files)


DATASET = Dataset(
    name="k400",
    description="Kinetics-400 (CVDF layout): train/ val/ test/ mp4 files and annotations/{train,val,test}.csv",
    source_kind=SOURCE_VIDEO,
    splits=tuple(SPLITS),
    default_short_side=DEFAULT_SHORT_SIDE,
    flip=True,
    read=read_dataset,
)
