"""A lean reader for WebDataset tar shards: one ``read`` per header and one per member, no per-block copying.

WebDataset's own iterator goes through Python's ``tarfile`` in stream mode, which reads every member in 10 KiB
pieces and joins them, a fixed cost per member plus one per piece. A packed shard has two members
per video (``.json`` and a ``.frames`` member of about 1 MB), so that piecewise copying is most of the cost of
reading it. This reader parses the 512-byte headers itself and reads each member with a single call.

It reads what WebDataset reads: POSIX ustar (with the name prefix field), pax extended headers (``path``) and
GNU long names; directories, links and other non-regular members are skipped, as are WebDataset's ``__meta__``
style names. Samples are formed the WebDataset way: consecutive members that share the part of their name before
the first dot of the basename form one sample, keyed by the rest (lower case). A damaged header (bad checksum,
bad size) or a member cut short raises `TarFormatError`; the caller names the shard and the fix.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

BLOCK_SIZE = 512
REGULAR_TYPES = (b"0", b"\0", b"7")
PAX_TYPE = b"x"
GNU_LONG_NAME_TYPE = b"L"
CHECKSUM_FIELD = slice(148, 156)
SKIPPED_NAME = re.compile(r"__[^/]*__($|/)")


class TarFormatError(ValueError):
    """A tar shard is damaged: bad header checksum, bad number field, or a member cut short."""


def _number(field: bytes) -> int:
    """Parse a tar number field: octal text, or GNU base-256 when the top bit of the first byte is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as error:
        raise TarFormatError(f"bad number field {field!r} in a tar header") from error


def _checksum_ok(header: bytes) -> bool:
    """Whether the stored checksum matches the header's byte sum (checksum field read as spaces).

    The unsigned sum is POSIX; some old writers store the signed sum, which Python's tarfile also accepts.
    """
    stored = _number(header[CHECKSUM_FIELD])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored == unsigned:
        return True
    high_bytes = sum(1 for byte in header[:148] + header[156:] if byte > 127)
    return stored == unsigned - 256 * high_bytes


def _header_name(header: bytes) -> str:
    """The member name of a ustar header (prefix + "/" + name when the prefix field is used)."""
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_path(payload: bytes) -> str | None:
    """The ``path`` record of a pax extended header, if any ("<length> path=<value>\\n" records)."""
    position = 0
    found = None
    while position < len(payload):
        space = payload.find(b" ", position)
        if space < 0:
            break
        length = int(payload[position:space])
        record = payload[space + 1 : position + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            found = value.decode("utf-8", "surrogateescape")
        position += max(length, 1)
    return found


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """Read exactly `size` bytes or raise TarFormatError (a member cut short)."""
    data = stream.read(size)
    if len(data) != size:
        raise TarFormatError(f"a member is cut short ({len(data)} of {size} bytes)")
    return data


def iterate_members(
    stream: BinaryIO, keep: Callable[[str], bool | None] | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield (name, data) of every regular member of a tar stream, in order.

    Parameters
    ----------
    stream : binary file
        The tar, read from its current position.
    keep : callable, optional
        Called with each regular member's name, in order: True reads and yields the member, False skips it by
        seeking past its data (not read), None ends the reading. Reads a part of a shard cheaply.

    Raises
    ------
    TarFormatError
        On a bad header checksum, a bad number field, or a truncated member.
    """
    pending_name: str | None = None
    while True:
        header = stream.read(BLOCK_SIZE)
        if len(header) < BLOCK_SIZE or header.count(0) == BLOCK_SIZE:
            return  # end-of-archive blocks (or a file ending on a block boundary without them)
        if not _checksum_ok(header):
            raise TarFormatError("bad tar header checksum")
        size = _number(header[124:136])
        if size < 0:
            raise TarFormatError("negative member size in a tar header")
        padding = -size % BLOCK_SIZE
        kind = header[156:157]
        if kind in (GNU_LONG_NAME_TYPE, PAX_TYPE):
            data = _read_exact(stream, size + padding)[:size]
            if kind == GNU_LONG_NAME_TYPE:
                pending_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            else:
                pending_name = _pax_path(data) or pending_name
            continue
        name, pending_name = pending_name or _header_name(header), None
        verdict = kind in REGULAR_TYPES and not SKIPPED_NAME.match(name) and (keep is None or keep(name))
        if verdict is None:
            return
        if verdict:
            data = _read_exact(stream, size)
            if padding:
                _read_exact(stream, padding)
            yield name, data
        else:
            stream.seek(size + padding, io.SEEK_CUR)


def split_name(name: str) -> tuple[str, str]:
    """Split a member name WebDataset's way: (key, field) at the first dot of the basename; field lower case."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :].lower()


def iterate_samples(
    stream: BinaryIO, url: str, first: int = 0, count: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield samples {"__key__", "__url__", field: bytes, ...} of a tar stream (consecutive members by key).

    Parameters
    ----------
    stream : binary file
        The tar.
    url : str
        Recorded as each sample's "__url__".
    first, count : int
        Yield only samples first .. first + count - 1 (all from `first` when count is None); the members of the
        samples before are skipped by seeking, and reading stops after the last one wanted.

    Raises
    ------
    TarFormatError
        As `iterate_members`, and when a sample holds the same field twice.
    """
    stop = None if count is None else first + count
    position = {"index": -1, "key": None}

    def wanted(name: str) -> bool | None:
        """Count samples by key; keep the members of the wanted ones, end after the last."""
        key, suffix = split_name(name)
        if not suffix:
            return False
        if key != position["key"]:
            position["index"], position["key"] = position["index"] + 1, key
        if stop is not None and position["index"] >= stop:
            return None
        return position["index"] >= first

    sample: dict[str, Any] | None = None
    for name, data in iterate_members(stream, wanted if first or stop is not None else None):
        key, suffix = split_name(name)
        if not suffix:
            continue
        if sample is None or sample["__key__"] != key:
            if sample is not None:
                yield sample
            sample = {"__key__": key, "__url__": url}
        if suffix in sample:
            raise TarFormatError(f"member {name!r} repeats field {suffix!r} of sample {key!r}")
        sample[suffix] = data
    if sample is not None:
        yield sample


def read_samples(path: Path, first: int = 0, count: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield the samples of the tar file at `path` (see `iterate_samples`, which `first` and `count` go to)."""
    with open(path, "rb", buffering=0) as stream:
        yield from iterate_samples(stream, str(path), first, count)
