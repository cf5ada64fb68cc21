"""Read videos stored as folders of frame files (SSv1, TSM-style extracted frames) into shard frames, no video decode.

Which files: the frame file names follow a pattern numbered from 1 (``{:05d}.jpg``, ``img_{:05d}.jpg``). A folder
listed with its frame count (a TSM list) gives frames 1..N; otherwise every file of the folder that matches the
pattern is a frame and they must be numbered 1..N without a gap.

How they are stored:

- a JPEG frame whose stored size is its own size (native size, or already at the short side asked for) is copied
  byte for byte: the dataset's own frames, no second lossy encoding, and no decode at all;
- any other frame (a resize, a PNG, a CMYK or otherwise unusual JPEG, bytes after the end-of-image marker) is
  decoded with Pillow, resized in RGB with Pillow's bicubic filter to the size rule of the video path (short side
  S, the long side rounded to the nearest pixel keeping the aspect ratio) and encoded at the shard JPEG quality.

A video that cannot be stored whole is skipped with its reason: a missing folder, no frame file, a gap in the
numbering, a frame that cannot be decoded, frames of different sizes.
"""

from __future__ import annotations

import io
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path

from preprocess.video_decode import JPEG_SUBSAMPLING_420, DecodedVideo

FIRST_FRAME_NUMBER = 1
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
COPYABLE_MODES = ("RGB", "L")
REASON_MISSING_FOLDER = "missing frame folder"
REASON_NO_FRAMES = "no frame files"
REASON_MISSING_FRAME = "missing frame file"
REASON_BAD_FRAME = "corrupt frame file"
REASON_SIZES_DIFFER = "frame sizes differ"


class FramePatternError(ValueError):
    """A frame file pattern is not a format string with exactly one integer field."""


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Return a regex matching the file names of `pattern` (one integer field, e.g. ``img_{:05d}.jpg``).

    Raises
    ------
    FramePatternError
        If the pattern has no field, several fields, or a field that does not format an integer.
    """
    parts = list(string.Formatter().parse(pattern))
    fields = [part for part in parts if part[1] is not None]
    if len(fields) != 1 or fields[0][1] not in ("", "0") or not (fields[0][2] or "d").endswith("d"):
        raise FramePatternError(
            f"frame pattern {pattern!r}: give one integer field, e.g. '{{:05d}}.jpg' or 'img_{{:05d}}.jpg'"
        )
    try:
        pattern.format(FIRST_FRAME_NUMBER)
    except (ValueError, IndexError) as error:
        raise FramePatternError(f"frame pattern {pattern!r}: {error}; e.g. '{{:05d}}.jpg'") from error
    regex = "".join(re.escape(literal) + ("(\\d+)" if field is not None else "") for literal, field, _, _ in parts)
    return re.compile(regex + r"\Z")


def frame_files(folder: Path, pattern: str, num_frames: int | None) -> list[Path] | str:
    """Return the frame files of a folder in order, or the reason the folder cannot be used.

    Parameters
    ----------
    folder : Path
        The video's folder.
    pattern : str
        Frame file names, numbered from 1.
    num_frames : int, optional
        The listed frame count (frames 1..num_frames); None: every file matching the pattern, numbered 1..N.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return REASON_MISSING_FOLDER
    if num_frames is not None:
        names = [pattern.format(number) for number in range(FIRST_FRAME_NUMBER, FIRST_FRAME_NUMBER + num_frames)]
        if not names:
            return f"{REASON_NO_FRAMES}: the list gives 0 frames"
        present = set(os.listdir(folder))
        missing = next((name for name in names if name not in present), None)
        return [folder / name for name in names] if missing is None else f"{REASON_MISSING_FRAME}: {missing}"
    regex = pattern_regex(pattern)
    numbers = {}
    for name in os.listdir(folder):
        match = regex.match(name)
        if match and pattern.format(int(match.group(1))) == name:
            numbers[int(match.group(1))] = name
    if not numbers:
        return f"{REASON_NO_FRAMES}: none named like {pattern}"
    expected = range(FIRST_FRAME_NUMBER, FIRST_FRAME_NUMBER + len(numbers))
    gap = next((number for number in expected if number not in numbers), None)
    if gap is not None:
        return f"{REASON_MISSING_FRAME}: {pattern.format(gap)} (the folder has {len(numbers)} frame files)"
    return [folder / numbers[number] for number in expected]


def stored_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The size a frame is stored at: native (0), else short side `short_side` with the aspect ratio kept."""
    if short_side <= 0:
        return width, height
    if width >= height:
        return max(1, int(width * short_side / height + 0.5)), short_side
    return short_side, max(1, int(height * short_side / width + 0.5))


def _copyable(data: bytes, image: object) -> bool:
    """True when a frame file can be stored as it is: a plain RGB or grey JPEG ending at its end-of-image marker."""
    return (
        getattr(image, "format", None) == "JPEG" and getattr(image, "mode", None) in COPYABLE_MODES
        and data.startswith(JPEG_SOI) and data.endswith(JPEG_EOI)
    )  # fmt: skip


def encode_frame(data: bytes, short_side: int, quality: int) -> tuple[bytes, int, int]:
    """Return (JPEG bytes, width, height) of one frame file's bytes, copied when possible, else re-encoded.

    Raises
    ------
    OSError, ValueError
        When Pillow cannot read or decode the file (the caller turns it into a skip reason).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = stored_size(image.width, image.height, short_side)
        if (width, height) == image.size and _copyable(data, image):
            return data, width, height
        image.load()
        rgb = image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    encoded = io.BytesIO()
    rgb.save(encoded, "JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING_420)
    return encoded.getvalue(), width, height


def read_frame_folder(
    folder: Path, pattern: str, num_frames: int | None, short_side: int, quality: int
) -> DecodedVideo:
    """Read one frame folder into the JPEG frames of a shard sample (or the reason it is skipped).

    Parameters
    ----------
    folder : Path
        The video's folder of frame files.
    pattern : str
        Frame file names numbered from 1, e.g. ``{:05d}.jpg``.
    num_frames : int, optional
        The listed frame count; None: every frame file of the folder.
    short_side : int
        Stored short side; 0 keeps the frames' own size.
    quality : int
        JPEG quality of re-encoded frames (IJG scale).
    """
    video = DecodedVideo(path=Path(folder))
    files = frame_files(folder, pattern, num_frames)
    if isinstance(files, str):
        video.error = files
        return video
    first_name = ""
    for path in files:
        try:
            frame, width, height = encode_frame(path.read_bytes(), short_side, quality)
        except (OSError, ValueError, SyntaxError) as error:
            video.frames, video.error = [], f"{REASON_BAD_FRAME}: {path.name} ({' '.join(str(error).split())[:120]})"
            return video
        if video.frames and (width, height) != (video.width, video.height):
            video.frames = []
            video.error = (f"{REASON_SIZES_DIFFER}: {first_name} is {video.width}x{video.height}, {path.name} is "
                           f"{width}x{height}")
            return video
        first_name = first_name or path.name
        video.frames.append(frame)
        video.width, video.height = width, height
    return video


def read_frame_folders(
    folders: Sequence[tuple[Path, str, int | None]], short_side: int, quality: int
) -> list[DecodedVideo]:
    """Read several frame folders ((folder, pattern, listed count) each) in order; see `read_frame_folder`."""
    return [read_frame_folder(folder, pattern, count, short_side, quality) for folder, pattern, count in folders]
