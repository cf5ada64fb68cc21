"""Something-Something V1 as distributed: JPEG frame folders and the 20BN CSV label files.

Layout::

    <root>/something-something-v1-labels.csv        one class name per line
    <root>/something-something-v1-train.csv         <id>;<class name> per line
    <root>/something-something-v1-validation.csv    same
    <root>/something-something-v1-test.csv          <id> per line
    <root>/20bn-something-something-v1/<id>/00001.jpg, 00002.jpg, ...   (100 px high, 12 fps)

Class names: the label file's lines sorted, the order of TSM's ``category.txt`` (which the official TSM / FFN
SSv1 checkpoints were trained with). A video's frames are every ``%05d.jpg`` file of its folder (numbered from 1
without a gap), read without any video decode and stored at their native size by default (copied byte for byte).
Test videos get label -1.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from preprocess.datasets.base import (
    REASON_UNKNOWN_CLASS,
    SOURCE_FRAMES,
    AnnotationError,
    Dataset,
    DatasetIndex,
    VideoEntry,
    check_unique_names,
    mark_duplicates,
    numbered_lines,
    read_text_lines,
)
from shard_format import SPLITS, TEST_LABEL

FRAMES_SUBDIR = "20bn-something-something-v1"
FILE_PREFIX = "something-something-v1-"
LABELS_FILE = f"{FILE_PREFIX}labels.csv"
FRAME_PATTERN = "{:05d}.jpg"
SEPARATOR = ";"
UNLABELLED_SPLITS = ("test",)
FORBIDDEN_ID_CHARACTERS = (".", "/", "\\")


def split_file(data_root: Path, split: str) -> Path:
    """Return the CSV of a split (train, validation, test)."""
    return Path(data_root) / f"{FILE_PREFIX}{split}.csv"


def read_class_names(path: Path) -> list[str]:
    """Read the label file (one class per line) and return the names sorted (TSM's category order).

    Raises
    ------
    AnnotationError
        When the file is missing, empty, or names a class twice.
    """
    lines = list(numbered_lines(read_text_lines(path, "SSv1's something-something-v1-labels.csv")))
    if not lines:
        raise AnnotationError(f"{path}: no class name; restore the file (one class name per line)")
    return sorted(check_unique_names(path, lines, "the label file"))


def _video_id(path: Path, number: int, text: str) -> str:
    """Check a video id (it names the frame folder and the shard key); AnnotationError naming the line."""
    if not text or any(character in text for character in FORBIDDEN_ID_CHARACTERS) or text != text.strip():
        raise AnnotationError(f"{path}:{number}: video id {text!r} must be a folder name without '.', '/' or "
                              "'\\'; fix that line")
    return text


def read_split(path: Path, split: str, names: Sequence[str], data_root: Path) -> list[VideoEntry]:
    """Read one split CSV in file order; a class not in the label file gives a skipped entry.

    Raises
    ------
    AnnotationError
        When the file is missing or a line of a labelled split is not ``id;class name``.
    """
    index = {name: position for position, name in enumerate(names)}
    entries = []
    for number, line in numbered_lines(read_text_lines(path, f"SSv1's {path.name}")):
        video_id, separator, label_text = line.partition(SEPARATOR)
        video_id = _video_id(path, number, video_id.strip())
        source = str(Path(data_root) / FRAMES_SUBDIR / video_id)
        common = {"source": source, "frame_pattern": FRAME_PATTERN}
        if split in UNLABELLED_SPLITS:
            entries.append(VideoEntry(video_id, split, TEST_LABEL, "", **common))
            continue
        label_text = label_text.strip()
        if not separator or not label_text:
            raise AnnotationError(f"{path}:{number}: expected 'id;class name' (e.g. '100218;Holding something'), "
                                  f"got {line!r}; fix that line")
        if label_text not in index:
            reason = f"{REASON_UNKNOWN_CLASS}: {label_text!r} (not in {LABELS_FILE})"
            entries.append(VideoEntry(video_id, split, TEST_LABEL, label_text, skip_reason=reason, **common))
        else:
            entries.append(VideoEntry(video_id, split, index[label_text], label_text, **common))
    return entries


def read_dataset(data_root: Path, splits: Sequence[str], args: argparse.Namespace | None = None) -> DatasetIndex:
    """Read SSv1's label file and the requested split CSVs (validated before any shard is written)."""
    names = read_class_names(Path(data_root) / LABELS_FILE)
    ordered = [split for split in SPLITS if split in splits]
    entries = {split: read_split(split_file(data_root, split), split, names, data_root) for split in ordered}
    entries = mark_duplicates(entries, lambda split: split_file(data_root, split).name)
    files = {split: str(split_file(data_root, split)) for split in ordered}
    return DatasetIndex(names, entries, files, settings={"frame_pattern": FRAME_PATTERN})


DATASET = Dataset(
    name="ssv1",
    description="Something-Something V1: 20bn-something-something-v1/<id>/%05d.jpg and the 20BN CSV files",
    source_kind=SOURCE_FRAMES,
    splits=tuple(SPLITS),
    default_short_side=0,
    flip=False,
    read=read_dataset,
)
