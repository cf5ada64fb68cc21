"""Atomic file writes: write under a temporary sibling name, fsync, then os.replace onto the final name.

A reader therefore sees either the old file or the whole new one, never half a file. Standard library only, so
that preprocess/, data_pipeline/, the training scripts and the benchmarks can all use it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temporary_prefix(path: Path) -> str:
    """Return the name prefix of `atomic_file`'s temporary siblings of `path` (the writer's pid follows it)."""
    return f".{path.name}.tmp-"


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporary siblings of `path` left by a killed `atomic_file` writer of any process."""
    path = Path(path)
    for stale in path.parent.glob(f"{temporary_prefix(path)}*"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path` for writing; on success fsync it and rename it to `path`.

    On any error the temporary file is removed and `path` is left as it was, so a reader never sees half a file.

    Parameters
    ----------
    path : Path
        The final file name.
    mode : str
        "wb" (bytes, the default) or "w" (UTF-8 text).
    """
    path = Path(path)
    temporary = path.with_name(f"{temporary_prefix(path)}{os.getpid()}")
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(temporary, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_json_atomic(path: Path, payload: Any, sort_keys: bool = True) -> None:
    """Write `payload` as indented JSON through `atomic_file`.

    Parameters
    ----------
    path : Path
        The final file name.
    payload : Any
        A JSON-serialisable object.
    sort_keys : bool
        Sort every object's keys (the default, so files diff stably); False keeps the payload's insertion order.
    """
    with atomic_file(path, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=sort_keys)
        handle.write("\n")
