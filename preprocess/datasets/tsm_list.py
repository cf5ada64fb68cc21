"""TSM-style frame folders with list files: any dataset a TSM / FFN user has already extracted to frames.

Layout (the official FFN and TSM code's ``data_list`` files)::

    <root>/<folder>/img_00001.jpg, img_00002.jpg, ...     frames numbered from 1 (--frame-pattern)
    train list:  "<folder> <num_frames> <label>" per line  (folder relative to <root>; it may hold spaces)
    val list:    same
    test list:   same, or "<folder> <num_frames>" (unlabelled, label -1)
    categories:  one class name per line (line i is class i), or "name index" lines

Flags: ``--train-list F --val-list F [--test-list F] --categories F [--category-format auto|lines|name-index]
--frame-pattern 'img_{:05d}.jpg'`` and ``--flip`` / ``--no-flip`` (whether training may flip frames horizontally:
yes for Kinetics, HMDB51, UCF101; no for Something-Something and Jester, whose classes name left and right).
A video's frames are files 1..num_frames of its folder (the listed count, as the official loader reads them);
a missing one skips the video. The shard key is the folder path with '/' as '~' (see base.make_video_id).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from preprocess.datasets.base import (
    REASON_UNKNOWN_CLASS,
    SOURCE_FRAMES,
    AnnotationError,
    Dataset,
    DatasetIndex,
    VideoEntry,
    make_video_id,
    mark_duplicates,
    numbered_lines,
    read_text_lines,
)
from preprocess.datasets.class_lists import CATEGORY_FORMATS, read_category_file
from shard_format import SPLITS, TEST_LABEL

DEFAULT_FRAME_PATTERN = "img_{:05d}.jpg"
LIST_FLAGS = {"train": "train_list", "validation": "val_list", "test": "test_list"}
UNLABELLED_SPLITS = ("test",)


def frame_pattern_of(args: argparse.Namespace) -> str:
    """The --frame-pattern given, else the official default ``img_{:05d}.jpg``."""
    return getattr(args, "frame_pattern", None) or DEFAULT_FRAME_PATTERN


def _count(path: Path, number: int, text: str, what: str) -> int:
    """Parse a non-negative integer field; AnnotationError naming the line otherwise."""
    if not text.isdigit():
        raise AnnotationError(f"{path}:{number}: {what} {text!r} is not a non-negative integer; expected "
                              "'<folder> <num_frames> <label>', fix that line")
    return int(text)


def _fields(path: Path, number: int, line: str, labelled: bool) -> tuple[str, str, str | None]:
    """Split a list line into (folder, num_frames, label or None); AnnotationError naming the line otherwise."""
    parts = line.rsplit(maxsplit=2)
    if len(parts) == 3 and (labelled or (parts[1].isdigit() and parts[2].isdigit())):
        return parts[0].strip(), parts[1], parts[2]
    if not labelled and len(parts) >= 2:
        folder, count = line.rsplit(maxsplit=1)
        return folder.strip(), count, None
    raise AnnotationError(f"{path}:{number}: expected '<folder> <num_frames> <label>', got {line!r}; fix that line")


def read_list(path: Path, split: str, names: Sequence[str], data_root: Path, pattern: str) -> list[VideoEntry]:
    """Read one list file in file order; a label outside the class list gives a skipped entry.

    Raises
    ------
    AnnotationError
        When the file is missing or a line is malformed.
    """
    entries = []
    labelled = split not in UNLABELLED_SPLITS
    for number, line in numbered_lines(read_text_lines(path, f"the {split} list")):
        folder, count_text, label_text = _fields(path, number, line, labelled)
        num_frames = _count(path, number, count_text, "num_frames")
        common = {"source": str(Path(data_root) / folder), "frame_pattern": pattern, "num_frames": num_frames}
        video_id = make_video_id(folder)
        if label_text is None:
            entries.append(VideoEntry(video_id, split, TEST_LABEL, "", **common))
            continue
        label = _count(path, number, label_text, "label")
        if label >= len(names):
            reason = f"{REASON_UNKNOWN_CLASS}: label {label} (the category file has {len(names)} classes)"
            entries.append(VideoEntry(video_id, split, TEST_LABEL, "", skip_reason=reason, **common))
        else:
            entries.append(VideoEntry(video_id, split, label, names[label], **common))
    return entries


def available_splits(args: argparse.Namespace) -> tuple[str, ...]:
    """The splits whose list file was given."""
    return tuple(split for split in SPLITS if getattr(args, LIST_FLAGS[split], None) is not None)


def read_dataset(data_root: Path, splits: Sequence[str], args: argparse.Namespace | None = None) -> DatasetIndex:
    """Read the category file and the requested splits' lists (validated before any shard is written)."""
    names = read_category_file(args.categories, args.category_format or "auto")
    pattern = frame_pattern_of(args)
    lists = {split: Path(getattr(args, LIST_FLAGS[split])) for split in SPLITS if split in splits}
    entries = {split: read_list(path, split, names, data_root, pattern) for split, path in lists.items()}
    entries = mark_duplicates(entries, lambda split: str(lists[split]))
    return DatasetIndex(names, entries, {split: str(path) for split, path in lists.items()},
                        settings={"frame_pattern": pattern})


def check_arguments(args: argparse.Namespace) -> str | None:
    """The flags tsm-list needs: a train or val list, the category file, and the flip rule."""
    from preprocess.frame_folders import FramePatternError, pattern_regex

    if not available_splits(args):
        return "--dataset tsm-list needs list files: --train-list F and --val-list F (and --test-list F)"
    if args.categories is None:
        return "--dataset tsm-list needs --categories F (one class per line, or 'name index' lines)"
    if args.flip is None:
        return ("--dataset tsm-list needs the flip rule: --flip (Kinetics, HMDB51, UCF101) or --no-flip "
                "(Something-Something, Jester: their classes name left and right)")
    try:
        pattern_regex(frame_pattern_of(args))
    except FramePatternError as error:
        return f"--frame-pattern: {error}"
    return None


def add_arguments(group: Any) -> None:
    """The list files, the category file and the frame file pattern."""
    group.add_argument("--train-list", type=Path, default=None, help="tsm-list: '<folder> <num_frames> <label>' lines")
    group.add_argument("--val-list", type=Path, default=None, help="tsm-list: the validation list")
    group.add_argument("--test-list", type=Path, default=None, help="tsm-list: the test list (labels optional)")
    group.add_argument("--categories", type=Path, default=None,
                       help="tsm-list: class names, one per line or 'name index' lines")
    group.add_argument("--category-format", choices=CATEGORY_FORMATS, default=None,
                       help="tsm-list: how --categories is written (default auto)")
    group.add_argument("--frame-pattern", default=None,
                       help=f"tsm-list: frame file names numbered from 1 (default {DEFAULT_FRAME_PATTERN!r})")


DATASET = Dataset(
    name="tsm-list",
    description="TSM-style frame folders with '<folder> <num_frames> <label>' list files (--train-list ...)",
    source_kind=SOURCE_FRAMES,
    splits=tuple(SPLITS),
    default_short_side=0,
    flip=None,
    read=read_dataset,
    add_arguments=add_arguments,
    check_arguments=check_arguments,
    splits_for=available_splits,
    own_flags=("train_list", "val_list", "test_list", "categories", "category_format", "frame_pattern"),
)
