"""Something-Something V2 as distributed: label JSON files and one VP9 .webm per video.

Layout (SSv2's own)::

    <root>/labels/labels.json       {"Approaching something with your camera": "0", ...}
    <root>/labels/train.json        [{"id": "78687", "label": "...", "template": "Putting [something] onto
                                      [something]", "placeholders": [...]}, ...]
    <root>/labels/validation.json   same schema as train.json
    <root>/labels/test.json         [{"id": "1420"}, ...]
    <root>/data/20bn-something-something-v2/<id>.webm

Class = labels[template with "[" and "]" removed]; test videos get label -1.

Two kinds of problems are told apart:

- a malformed file (not JSON, wrong structure, an entry without a usable id or template, a label that is not
  an integer) raises :class:`AnnotationError` naming the file and the entry, before any shard is written;
- a well-formed entry that cannot be used (a template not in labels.json, an id seen before) is kept with a
  ``skip_reason`` so the run goes on and lists it in the manifest's "skipped".
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from preprocess.datasets.base import (
    SOURCE_VIDEO,
    AnnotationError,
    Dataset,
    DatasetIndex,
    VideoEntry,
    mark_duplicates,
)
from shard_format import SPLITS, TEST_LABEL

LABELS_SUBDIR = Path("labels")
VIDEO_SUBDIR = Path("data") / "20bn-something-something-v2"
LABELS_FILE = "labels.json"
VIDEO_SUFFIX = ".webm"
UNLABELLED_SPLITS = ("test",)
FORBIDDEN_ID_CHARACTERS = (".", "/", "\\")
REASON_UNKNOWN_TEMPLATE = "template not in labels.json"
DEFAULT_SHORT_SIDE = 256


def template_key(template: str) -> str:
    """Return the labels.json key of a template: the text with "[" and "]" removed."""
    return template.replace("[", "").replace("]", "")


def labels_dir(data_root: Path) -> Path:
    """Return the folder holding the label files."""
    return Path(data_root) / LABELS_SUBDIR


def video_path(data_root: Path, video_id: str) -> Path:
    """Return the path of a video file from its id."""
    return Path(data_root) / VIDEO_SUBDIR / f"{video_id}{VIDEO_SUFFIX}"


def _load_json(path: Path) -> Any:
    """Parse a JSON file; raise AnnotationError naming the file, the position and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise AnnotationError(
            f"{path}: file not found; put the SSv2 label files in {path.parent} (or drop its split with --splits)"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: cannot be read ({error}); restore the file from the dataset") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AnnotationError(
            f"{path}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg}); "
            "restore the file from the dataset"
        ) from error


def read_labels(path: Path) -> dict[str, int]:
    """Read labels.json ({template text: class index string}) and return {template text: int}.

    Raises
    ------
    AnnotationError
        If the file is missing, not JSON, not an object, or an entry is not a non-negative integer string.
    """
    path = Path(path)
    payload = _load_json(path)
    if not isinstance(payload, dict) or not payload:
        raise AnnotationError(f"{path}: expected a non-empty object {{template: class index}}; restore the file")
    labels: dict[str, int] = {}
    for key, value in payload.items():
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not text.isdigit():
            raise AnnotationError(
                f"{path}: entry {key!r} has class index {value!r}, expected a non-negative integer string; "
                "fix that entry"
            )
        labels[key] = int(text)
    return labels


def class_names(labels: dict[str, int]) -> list[str]:
    """Return the class names in class-index order (labels.json keys; an index no key names is its number).

    Parameters
    ----------
    labels : dict
        {template text: class index}, as read_labels returns it.
    """
    names = [str(index) for index in range(max(labels.values(), default=-1) + 1)]
    for name, index in labels.items():
        names[index] = name
    return names


def _entry_id(path: Path, position: int, entry: Any) -> str:
    """Return a checked video id or raise AnnotationError naming the entry."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{path}: entry {position} is {type(entry).__name__}, expected an object; fix it")
    video_id = entry.get("id")
    if isinstance(video_id, int) and not isinstance(video_id, bool):
        video_id = str(video_id)
    if not isinstance(video_id, str) or not video_id.strip():
        raise AnnotationError(f"{path}: entry {position} has no usable \"id\" ({video_id!r}); fix that entry")
    if any(character in video_id for character in FORBIDDEN_ID_CHARACTERS) or video_id != video_id.strip():
        raise AnnotationError(
            f"{path}: entry {position} has id {video_id!r}, which must not contain '.', '/', '\\' or spaces at "
            "its ends (it names the .webm file and the WebDataset key); fix that entry"
        )
    return video_id


def _entry_template(path: Path, position: int, video_id: str, entry: dict[str, Any]) -> str:
    """Return the template of a labelled entry or raise AnnotationError naming it."""
    template = entry.get("template")
    if not isinstance(template, str) or not template.strip():
        raise AnnotationError(
            f"{path}: entry {position} (id {video_id}) has no \"template\" string ({template!r}); fix that entry"
        )
    return template


def read_split(path: Path, split: str, labels: dict[str, int], data_root: Path | None = None) -> list[VideoEntry]:
    """Read one split file and return its entries in file order (unknown templates carry a skip reason).

    With `data_root`, each entry's source is its .webm file under it.

    Raises
    ------
    AnnotationError
        If the file is missing, not JSON, not a list, or an entry has no usable id (or template, for a
        labelled split).
    """
    path = Path(path)
    payload = _load_json(path)
    if not isinstance(payload, list):
        raise AnnotationError(f"{path}: expected a list of {{\"id\": ...}} objects, got {type(payload).__name__}")
    entries = []
    for position, raw_entry in enumerate(payload):
        video_id = _entry_id(path, position, raw_entry)
        source = str(video_path(data_root, video_id)) if data_root is not None else ""
        if split in UNLABELLED_SPLITS:
            entries.append(VideoEntry(video_id, split, TEST_LABEL, "", source=source))
            continue
        template = _entry_template(path, position, video_id, raw_entry)
        label = labels.get(template_key(template))
        if label is None:
            reason = f"{REASON_UNKNOWN_TEMPLATE}: {template_key(template)!r}"
            entries.append(VideoEntry(video_id, split, TEST_LABEL, template, skip_reason=reason, source=source))
        else:
            entries.append(VideoEntry(video_id, split, label, template, source=source))
    return entries


def load_annotations(data_root: Path, splits: Sequence[str] = SPLITS) -> dict[str, list[VideoEntry]]:
    """Read labels.json and every requested split file; validate all of them before returning.

    Parameters
    ----------
    data_root : Path
        The dataset root holding labels/ and data/20bn-something-something-v2/.
    splits : sequence of str
        Split names among train, validation, test (read in the canonical order whatever the order given).

    Returns
    -------
    dict
        {split: [VideoEntry, ...]} in file order; entries that cannot be used carry `skip_reason`.

    Raises
    ------
    AnnotationError
        On the first malformed file or entry, naming it and the fix.
    """
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise AnnotationError(f"unknown split(s) {unknown}; choose among {list(SPLITS)}")
    folder = labels_dir(data_root)
    labels = read_labels(folder / LABELS_FILE)
    ordered = [split for split in SPLITS if split in splits]
    entries = {split: read_split(folder / f"{split}.json", split, labels, data_root) for split in ordered}
    return mark_duplicates(entries, lambda split: f"{split}.json")


def read_dataset(data_root: Path, splits: Sequence[str], args: argparse.Namespace | None = None) -> DatasetIndex:
    """Read SSv2 for `make shards`: labels.json's templates are the class names, sources are the .webm files.

    The class count recorded is the size of labels.json (as before the dataset interface).
    """
    labels = read_labels(labels_dir(data_root) / LABELS_FILE)
    entries = load_annotations(data_root, splits)
    files = {split: str(labels_dir(data_root) / f"{split}.json") for split in entries}
    return DatasetIndex(class_names(labels), entries, files, num_classes=len(labels))


DATASET = Dataset(
    name="ssv2",
    description="Something-Something V2: labels/*.json and data/20bn-something-something-v2/<id>.webm",
    source_kind=SOURCE_VIDEO,
    splits=tuple(SPLITS),
    default_short_side=DEFAULT_SHORT_SIDE,
    flip=False,
    read=read_dataset,
)
