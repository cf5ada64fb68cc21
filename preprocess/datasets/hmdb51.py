"""HMDB51 as distributed: class folders of .avi files and the three official train/test splits.

Layout::

    <root>/<class>/<video>.avi                                       51 class folders
    <root>/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt  "<video>.avi <0|1|2>" per line

Split file flags: 1 = train, 2 = test, 0 = not used by that split. ``--split-id`` (1, 2 or 3, default 1) chooses
the split; its test part becomes the shards' ``validation`` split (as the official lists do); HMDB51 has no
separate test set. Class names: the 51 classes, sorted (one split file per class folder: the class is the file
name before ``_test_split``). A video listed under two classes is kept once (duplicate id).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from preprocess.datasets.base import (
    SOURCE_VIDEO,
    AnnotationError,
    Dataset,
    DatasetIndex,
    VideoEntry,
    make_video_id,
    mark_duplicates,
    numbered_lines,
    read_text_lines,
)

SPLITS_SUBDIR = "testTrainMulti_7030_splits"
SPLIT_FILE = re.compile(r"(.+)_test_split([123])\.txt\Z")
SPLIT_IDS = (1, 2, 3)
DEFAULT_SPLIT_ID = 1
SPLIT_OF_FLAG = {"1": "train", "2": "validation"}
UNUSED_FLAG = "0"
HMDB_SPLITS = ("train", "validation")
DEFAULT_SHORT_SIDE = 256


def split_file(data_root: Path, class_name: str, split_id: int) -> Path:
    """Return the official split file of a class."""
    return Path(data_root) / SPLITS_SUBDIR / f"{class_name}_test_split{split_id}.txt"


def read_class_names(data_root: Path) -> list[str]:
    """Return the sorted class names: those having split files in testTrainMulti_7030_splits/.

    Raises
    ------
    AnnotationError
        When the folder is missing or holds no split file.
    """
    folder = Path(data_root) / SPLITS_SUBDIR
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: no such folder; put HMDB51's official split files "
                              "(testTrainMulti_7030_splits/<class>_test_split1.txt, ...) under --data-root")
    names = sorted({match.group(1) for path in folder.iterdir() if (match := SPLIT_FILE.match(path.name))})
    if not names:
        raise AnnotationError(f"{folder}: no <class>_test_split<1|2|3>.txt file; restore HMDB51's split files")
    return names


def read_class_split(path: Path, label: int, class_name: str, data_root: Path) -> list[VideoEntry]:
    """Read one class's split file: the entries of its train (1) and test (2) videos, in file order.

    Raises
    ------
    AnnotationError
        When the file is missing or a line is not ``<video> <0|1|2>``.
    """
    entries = []
    for number, line in numbered_lines(read_text_lines(path, f"HMDB51's split file {path.name}")):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or parts[1] not in (UNUSED_FLAG, *SPLIT_OF_FLAG):
            raise AnnotationError(f"{path}:{number}: expected '<video>.avi <0|1|2>' (1 train, 2 test, 0 unused), "
                                  f"got {line!r}; fix that line")
        video, flag = parts[0].strip(), parts[1]
        if flag == UNUSED_FLAG:
            continue
        entries.append(VideoEntry(make_video_id(Path(video).stem), SPLIT_OF_FLAG[flag], label, class_name,
                                  source=str(Path(data_root) / class_name / video)))
    return entries


def split_id_of(args: argparse.Namespace | None) -> int:
    """The --split-id given (default 1)."""
    value = getattr(args, "split_id", None) if args is not None else None
    return DEFAULT_SPLIT_ID if value is None else int(value)


def read_dataset(data_root: Path, splits: Sequence[str], args: argparse.Namespace | None = None) -> DatasetIndex:
    """Read every class's split file of --split-id; train and validation entries by class order, then file order."""
    split_id = split_id_of(args)
    names = read_class_names(data_root)
    by_split: dict[str, list[VideoEntry]] = {split: [] for split in HMDB_SPLITS if split in splits}
    for label, name in enumerate(names):
        for entry in read_class_split(split_file(data_root, name, split_id), label, name, data_root):
            if entry.split in by_split:
                by_split[entry.split].append(entry)
    where = f"{SPLITS_SUBDIR}/*_test_split{split_id}.txt"
    entries = mark_duplicates(by_split, lambda split: f"{split} of {where}")
    files = {split: f"{Path(data_root) / where} ({split} part)" for split in by_split}
    return DatasetIndex(names, entries, files, settings={"split_id": split_id})


def add_arguments(group: Any) -> None:
    """--split-id."""
    group.add_argument("--split-id", type=int, choices=SPLIT_IDS, default=None,
                       help=f"hmdb51: the official split (default {DEFAULT_SPLIT_ID})")


DATASET = Dataset(
    name="hmdb51",
    description="HMDB51: <class>/<video>.avi and testTrainMulti_7030_splits/ (--split-id 1|2|3)",
    source_kind=SOURCE_VIDEO,
    splits=HMDB_SPLITS,
    default_short_side=DEFAULT_SHORT_SIDE,
    flip=True,
    read=read_dataset,
    add_arguments=add_arguments,
    own_flags=("split_id",),
)
