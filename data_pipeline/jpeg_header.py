"""A cheap JPEG header check: find SOI and the baseline / extended / progressive frame header, read its size.

The loader workers of the GPU backends run it on every selected frame (a few microseconds each, no decode), so a
video whose frames are not JPEGs of the stored size is known before its batch reaches the main process. It reads
headers only: a frame cut short inside its entropy-coded data passes here and fails in the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

START_OF_IMAGE = b"\xff\xd8"
MARKER_PREFIX = 0xFF
FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2})  # SOF0 baseline, SOF1 extended sequential, SOF2 progressive
UNSUPPORTED_FRAME_MARKERS = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7: no length field
END_MARKERS = frozenset({0x00, 0xD8, 0xD9, 0xDA})  # stuffing, a second SOI, EOI or SOS before any frame header
MARKER_AND_LENGTH_BYTES = 4
MIN_FRAME_SEGMENT_LENGTH = 8  # length field itself, precision, height, width, component count


def jpeg_frame_size(jpeg: bytes) -> tuple[int, int] | None:
    """Return (width, height) from a JPEG's SOF0/SOF1/SOF2 frame header, None when there is no valid one.

    Parameters
    ----------
    jpeg : bytes
        The encoded image.

    Returns
    -------
    tuple of int or None
        (width, height); None for bytes that do not start with SOI, are cut short before the frame header,
        hold a malformed segment, reach the scan first, or use a frame type GPU decoders do not take
        (lossless, arithmetic-coded, hierarchical).
    """
    if jpeg[:2] != START_OF_IMAGE:
        return None
    position, end = 2, len(jpeg)
    while position + MARKER_AND_LENGTH_BYTES <= end:
        if jpeg[position] != MARKER_PREFIX:
            return None
        marker = jpeg[position + 1]
        if marker == MARKER_PREFIX:  # fill byte before a marker
            position += 1
            continue
        if marker in STANDALONE_MARKERS:
            position += 2
            continue
        if marker in END_MARKERS or marker in UNSUPPORTED_FRAME_MARKERS:
            return None
        length = (jpeg[position + 2] << 8) | jpeg[position + 3]
        if length < 2 or position + 2 + length > end:
            return None
        if marker in FRAME_MARKERS:
            return _frame_size(jpeg, position, length)
        position += 2 + length
    return None


def _frame_size(jpeg: bytes, position: int, length: int) -> tuple[int, int] | None:
    """Read (width, height) from the frame segment whose marker starts at `position`; None when malformed."""
    if length < MIN_FRAME_SEGMENT_LENGTH:
        return None
    height = (jpeg[position + 5] << 8) | jpeg[position + 6]
    width = (jpeg[position + 7] << 8) | jpeg[position + 8]
    if width == 0 or height == 0:
        return None
    return width, height


def headers_fit(jpegs: Sequence[bytes], width: int, height: int) -> bool:
    """True when every JPEG has a valid frame header of exactly `width` x `height`."""
    expected = (int(width), int(height))
    return all(jpeg_frame_size(jpeg) == expected for jpeg in jpegs)


__all__ = ["headers_fit", "jpeg_frame_size"]
