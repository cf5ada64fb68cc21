"""Resolve the ffmpeg binary in one place: $FFMPEG_BINARY, then imageio-ffmpeg's static binary, then PATH.

Every job that runs ffmpeg calls :func:`resolve_ffmpeg` once, logs the returned path and version, and records
them in its outputs (annotation metadata, shard manifests, benchmark JSON).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess

FFMPEG_ENV_VAR = "FFMPEG_BINARY"
VERSION_TIMEOUT_S = 20


class FfmpegNotFoundError(RuntimeError):
    """No working ffmpeg binary was found."""


@dataclasses.dataclass(frozen=True)
class FfmpegInfo:
    """A working ffmpeg binary: its path, the first line of `ffmpeg -version`, and where it was found."""

    path: str
    version: str
    source: str

    def as_dict(self) -> dict[str, str]:
        """Return the fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _candidates() -> list[tuple[str, str | None]]:
    """List (source, path) pairs in resolution order; path None means the candidate is unavailable."""
    found: list[tuple[str, str | None]] = [(f"${FFMPEG_ENV_VAR}", os.environ.get(FFMPEG_ENV_VAR) or None)]
    try:
        import imageio_ffmpeg

        found.append(("imageio-ffmpeg", imageio_ffmpeg.get_ffmpeg_exe()))
    except (ImportError, RuntimeError):
        found.append(("imageio-ffmpeg", None))
    found.append(("PATH", shutil.which("ffmpeg")))
    return found


def _probe_version(path: str) -> str | None:
    """Return the first line of `path -version`, or None when the binary does not run."""
    try:
        completed = subprocess.run(
            [path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0 or not completed.stdout:
        return None
    return completed.stdout.splitlines()[0].strip()


@functools.lru_cache(maxsize=None)
def resolve_ffmpeg() -> FfmpegInfo:
    """Find a working ffmpeg binary.

    Returns
    -------
    FfmpegInfo
        The first candidate that runs: $FFMPEG_BINARY, imageio-ffmpeg's bundled binary, `ffmpeg` on PATH.

    Raises
    ------
    FfmpegNotFoundError
        With one line naming every binary tried and how to fix it.
    """
    tried = []
    for source, path in _candidates():
        if path is None:
            tried.append(f"{source}: not set or not installed")
            continue
        version = _probe_version(path)
        if version is not None:
            return FfmpegInfo(path=path, version=version, source=source)
        tried.append(f"{source}: {path} does not run")
    raise FfmpegNotFoundError(
        "no working ffmpeg (" + "; ".join(tried) + "); fix: `pip install imageio-ffmpeg` (make does this) "
        f"or set {FFMPEG_ENV_VAR}=/path/to/ffmpeg"
    )
