"""The dataset interface of `make shards`: what a dataset module gives, and the functions they share.

A dataset module (one per layout: ssv2, ssv1, k400, hmdb51, tsm-list) reads a dataset as it is distributed and
returns a :class:`DatasetIndex`: the class names (decided once, the same list for every split), and per split
the :class:`VideoEntry` list in file order. Each entry names its source, a video file or a folder of frame files,
and carries a ``skip_reason`` when it cannot be used. `make shards` does everything after that (order, shards,
decoding, manifests) the same way for every dataset.

Two kinds of problems are told apart, as for every dataset:

- a malformed label file (unreadable, wrong structure, a line that cannot be parsed) raises
  :class:`AnnotationError` naming the file, the line (or entry) and the fix, before any shard is written;
- a well-formed entry that cannot be used (a class not in the class list, an id seen before) is kept with a
  ``skip_reason`` so the run goes on and lists it in the manifest's "skipped". A missing or broken video or frame
  is found when it is read and skipped the same way.

Adding a dataset: write a module that defines a :class:`Dataset` named ``DATASET`` and add it to
``preprocess.datasets.DATASETS`` (docs/data.md walks through it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

SOURCE_VIDEO = "video"
SOURCE_FRAMES = "frames"
REASON_DUPLICATE_ID = "duplicate id"
REASON_UNKNOWN_CLASS = "unknown class"
FORBIDDEN_KEY_CHARACTERS = ("/", "\\", ".")
KEY_SEPARATOR = "~"
MAX_TAR_NAME_BYTES = 100  # ustar member names without a directory part
LONGEST_MEMBER_SUFFIX = ".frames"
KEY_HASH_CHARACTERS = 16
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ogv")


class AnnotationError(ValueError):
    """A label file is missing or malformed; the message names the file, the line or entry and the fix."""


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One annotated video of a split.

    Attributes
    ----------
    video_id : str
        The sample key in the shards (no '.', '/' or '\\').
    split : str
        train, validation or test.
    label : int
        Index into the dataset's class names; -1 when the split is unlabelled (or the entry is skipped).
    template : str
        The text stored in the sample's "template": SSv2's template, the class name elsewhere ("" unlabelled).
    skip_reason : str, optional
        Why the entry cannot be used (it is listed in the manifest's "skipped" and never read).
    source : str
        The video file, or the folder of frame files.
    frame_pattern : str, optional
        For a frame folder: the frame file names as a format string numbered from 1 (``{:05d}.jpg``); None for a
        video file.
    num_frames : int, optional
        For a frame folder listed with its frame count (a TSM list): frames 1..num_frames are read; None: every
        frame file of the folder.
    """

    video_id: str
    split: str
    label: int
    template: str
    skip_reason: str | None = None
    source: str = ""
    frame_pattern: str | None = None
    num_frames: int | None = None

    @property
    def source_kind(self) -> str:
        """"video" for a video file, "frames" for a folder of frame files."""
        return SOURCE_VIDEO if self.frame_pattern is None else SOURCE_FRAMES


@dataclasses.dataclass
class DatasetIndex:
    """What a dataset module read: the class names and each split's entries.

    Attributes
    ----------
    class_names : list of str
        In class-index order; the same list goes into every split's manifest.
    entries : dict
        {split: [VideoEntry, ...]} in file order, for the requested splits (canonical order).
    label_files : dict
        {split: the file (or files) listing the split}, for the message about an empty split.
    settings : dict
        Dataset-specific settings added to every split's hashed settings (e.g. the frame file pattern, the HMDB51
        split id); empty for SSv2, whose settings are unchanged.
    num_classes : int, optional
        The class count recorded in the settings when it is not len(class_names) (SSv2: the size of labels.json).
    """

    class_names: list[str]
    entries: dict[str, list[VideoEntry]]
    label_files: dict[str, str]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_classes: int | None = None

    @property
    def class_count(self) -> int:
        """The number of classes recorded in the settings."""
        return len(self.class_names) if self.num_classes is None else self.num_classes


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset layout `make shards` can read (one module each; registered in preprocess.datasets.DATASETS).

    Attributes
    ----------
    name : str
        The --dataset value (and the manifest's "dataset").
    description : str
        One line for --help and docs.
    source_kind : str
        "video" (video files, decoded by ffmpeg) or "frames" (folders of frame files, no video decode).
    splits : tuple of str
        The splits the layout has (`--splits` defaults to them).
    default_short_side : int
        The stored frames' short side when --short-side is not given (0: native size).
    flip : bool or None
        Whether training may flip frames horizontally (recorded in the manifest); None: the user says it
        (--flip / --no-flip).
    read : callable
        ``read(data_root, splits, args) -> DatasetIndex``; raises AnnotationError on a malformed file.
    add_arguments : callable, optional
        ``add_arguments(group)`` adds the dataset's own flags (default None, checked by `check_arguments`).
    check_arguments : callable, optional
        ``check_arguments(args) -> str | None``: an error message for flags the dataset needs, else None.
    splits_for : callable, optional
        ``splits_for(args) -> tuple of str``: the splits available with these flags (default: `splits`).
    """

    name: str
    description: str
    source_kind: str
    splits: tuple[str, ...]
    default_short_side: int
    flip: bool | None
    read: Callable[[Path, Sequence[str], argparse.Namespace], DatasetIndex]
    add_arguments: Callable[[Any], None] | None = None
    check_arguments: Callable[[argparse.Namespace], str | None] | None = None
    splits_for: Callable[[argparse.Namespace], tuple[str, ...]] | None = None
    own_flags: tuple[str, ...] = ()

    def available_splits(self, args: argparse.Namespace) -> tuple[str, ...]:
        """The splits this dataset can write with the given flags."""
        return self.splits_for(args) if self.splits_for is not None else self.splits


def read_text_lines(path: Path, what: str) -> list[str]:
    """Return the lines of a UTF-8 text file (line ends removed); AnnotationError naming the file when unreadable.

    Parameters
    ----------
    path : Path
        The file.
    what : str
        What the file should be, for the message ("the SSv1 train CSV", ...).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise AnnotationError(f"{path}: file not found; give {what} (or drop its split with --splits)") from error
    except OSError as error:
        raise AnnotationError(f"{path}: cannot be read ({error.strerror}); restore {what}") from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise AnnotationError(
            f"{path}: not UTF-8 text (byte {error.start}); restore {what} or convert it to UTF-8"
        ) from error
    return text.splitlines()


def numbered_lines(lines: Sequence[str]) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for every non-blank line."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line.strip()


def check_unique_names(path: Path, names_by_line: Sequence[tuple[int, str]], what: str) -> list[str]:
    """Return the names in order; AnnotationError naming both lines when a name repeats."""
    first_line: dict[str, int] = {}
    for number, name in names_by_line:
        if name in first_line:
            raise AnnotationError(
                f"{path}:{number}: class {name!r} already on line {first_line[name]}; {what} must name each class "
                "once, remove one of the lines"
            )
        first_line[name] = number
    return [name for _, name in names_by_line]


def make_video_id(text: str) -> str:
    """Return a shard key for a video named by `text` (a file stem or a folder path).

    A key cannot hold '.', '/' or '\\' (WebDataset cuts a member name at the first dot of its base name): each
    '/' or '\\' becomes '~' and each '.' '_'; whitespace at the ends is dropped and inner whitespace becomes '_'.
    A key longer than a tar member name allows is cut and ends with 16 hex digits of the SHA-256 of `text`, so it
    stays unique. Two names that give the same key are told apart by the duplicate rule (the second is skipped).
    """
    key = "_".join(text.strip().strip("/\\").split())
    for character in ("/", "\\"):
        key = key.replace(character, KEY_SEPARATOR)
    key = key.replace(".", "_")
    limit = MAX_TAR_NAME_BYTES - len(LONGEST_MEMBER_SUFFIX)
    if len(key.encode("utf-8")) > limit:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_HASH_CHARACTERS]
        head = key.encode("utf-8")[: limit - KEY_HASH_CHARACTERS - 1].decode("utf-8", "ignore")
        key = f"{head}-{digest}"
    return key


def mark_duplicates(
    entries_by_split: dict[str, list[VideoEntry]], where: Callable[[str], str]
) -> dict[str, list[VideoEntry]]:
    """Keep the first entry of each id (splits in the given order); later ones carry a duplicate reason.

    `where(split)` names the file of a split in the reason ("duplicate id: 7 already in train.json").
    """
    first_seen: dict[str, str] = {}
    marked: dict[str, list[VideoEntry]] = {}
    for split, entries in entries_by_split.items():
        marked[split] = []
        for entry in entries:
            if entry.video_id in first_seen:
                reason = f"{REASON_DUPLICATE_ID}: {entry.video_id} already in {where(first_seen[entry.video_id])}"
                entry = dataclasses.replace(entry, skip_reason=entry.skip_reason or reason)
            else:
                first_seen[entry.video_id] = split
            marked[split].append(entry)
    return marked


def entries_digest(entries: Sequence[VideoEntry]) -> str:
    """Return a short hash of a split's entries (ids, labels, templates, skip reasons, listed frame counts).

    The source paths are not in it (moving the dataset keeps the shards); a listed frame count is.
    """
    digest = hashlib.sha256()
    for entry in entries:
        record: list[Any] = [entry.video_id, entry.label, entry.template, entry.skip_reason]
        if entry.num_frames is not None:
            record.append(entry.num_frames)
        digest.update(json.dumps(record, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def index_video_files(folder: Path, max_depth: int) -> dict[str, Path]:
    """Map each video file's stem to its path, under `folder` down to `max_depth` folder levels.

    Files are visited in sorted order and the first path of a stem wins, so the choice is deterministic. A missing
    folder gives an empty map (each of its videos is then skipped as missing).
    """
    found: dict[str, Path] = {}
    if not Path(folder).is_dir():
        return found
    for current, folders, files in os.walk(folder):
        depth = len(Path(current).relative_to(folder).parts)
        folders[:] = sorted(name for name in folders if not name.startswith(".")) if depth < max_depth else []
        for name in sorted(files):
            path = Path(current) / name
            if path.suffix.lower() in VIDEO_SUFFIXES and not name.startswith("."):
                found.setdefault(path.stem, path)
    return found
