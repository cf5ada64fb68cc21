"""Class lists in the formats datasets and tools write them, read into class names in class-index order.

- a category file, one class name per line (TSM's ``category.txt``, a Kinetics label map): line i is class i;
- a ``name index`` file: each line a class name, a space and its index (0..N-1, each once, in any order);
- SSv2's ``labels.json`` ({template: "index"});
- a JSON list of names, or any JSON object with a "class_names" list (a shards manifest, a checkpoint's record).

`read_category_file` reads the two text forms (``format="auto"``: ``name index`` when every line ends in an
integer, else one name per line); `read_class_list` reads any of them (predict.py's ``--labels``).
"""

from __future__ import annotations

import json
from pathlib import Path

from preprocess.datasets.base import AnnotationError, check_unique_names, numbered_lines, read_text_lines

CATEGORY_FORMATS = ("auto", "lines", "name-index")
JSON_SUFFIX = ".json"


def _ends_in_integer(line: str) -> bool:
    """True when the line is a name, whitespace and a non-negative integer."""
    parts = line.rsplit(maxsplit=1)
    return len(parts) == 2 and parts[1].isdigit()


def read_category_file(path: Path, category_format: str = "auto") -> list[str]:
    """Read a category file: one class name per line, or ``name index`` lines.

    Parameters
    ----------
    path : Path
        The file (UTF-8; blank lines are ignored).
    category_format : str
        "lines", "name-index" or "auto" (name-index when every line ends in an integer).

    Raises
    ------
    AnnotationError
        When the file is missing or empty, a name repeats, or (name-index) an index is missing, repeated or not
        an integer; the message names the file, the line and the fix.
    """
    path = Path(path)
    if category_format not in CATEGORY_FORMATS:
        raise AnnotationError(f"category format {category_format!r}: choose one of {CATEGORY_FORMATS}")
    lines = list(numbered_lines(read_text_lines(path, "the category file")))
    if not lines:
        raise AnnotationError(f"{path}: no class name; write one class per line (or 'name index' lines)")
    by_index = category_format == "name-index" or (
        category_format == "auto" and all(_ends_in_integer(line) for _, line in lines)
    )
    if not by_index:
        return check_unique_names(path, lines, "a category file")
    return _names_by_index(path, lines)


def _names_by_index(path: Path, lines: list[tuple[int, str]]) -> list[str]:
    """Order ``name index`` lines by index; AnnotationError naming the line of any problem."""
    placed: dict[int, tuple[int, str]] = {}
    for number, line in lines:
        if not _ends_in_integer(line):
            raise AnnotationError(f"{path}:{number}: expected 'name index' (e.g. 'abseiling 0'), got {line!r}; "
                                  "fix that line")
        name, index_text = line.rsplit(maxsplit=1)
        index = int(index_text)
        if index in placed:
            raise AnnotationError(f"{path}:{number}: index {index} already on line {placed[index][0]}; give each "
                                  "class its own index")
        placed[index] = (number, name.strip())
    missing = next((index for index in range(len(placed)) if index not in placed), None)
    if missing is not None:
        raise AnnotationError(f"{path}: indices must be 0..{len(placed) - 1}, index {missing} is missing; "
                              "number the classes from 0 without a gap")
    ordered = [placed[index] for index in range(len(placed))]
    return check_unique_names(path, ordered, "a category file")


def read_class_list(path: Path) -> list[str]:
    """Read class names from any supported class list (see the module docstring).

    Raises
    ------
    AnnotationError
        When the file is missing or in none of the formats (the message names the file and the fix).
    """
    path = Path(path)
    if path.suffix.lower() != JSON_SUFFIX:
        return read_category_file(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise AnnotationError(f"{path}: file not found; give a class list") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AnnotationError(f"{path}: not a readable JSON file ({error}); give a class list") from error
    if isinstance(payload, dict) and isinstance(payload.get("class_names"), list):
        payload = payload["class_names"]
    if isinstance(payload, list) and payload and all(isinstance(name, str) for name in payload):
        return [str(name) for name in payload]
    if isinstance(payload, dict) and payload:
        from preprocess.datasets.ssv2 import class_names, read_labels

        return class_names(read_labels(path))
    raise AnnotationError(f"{path}: neither SSv2's labels.json, a list of names nor a manifest with "
                          "\"class_names\"; give one of those or a text file with one class per line")
