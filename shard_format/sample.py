"""The sample layout of the shards: names, the two tar members of a video, reading them back, frame storage.

One sample per video, key = the video id, exactly two tar members:

- ``<id>.json``: {"id": str, "label": int (-1 for test), "template": str, "num_frames": int, "width": int,
  "height": int, "offsets": [int], "lengths": [int]} (byte offset and length of each frame inside the packed
  member), plus "source_sar": "num:den" when the source's pixels were not square (the frames always are);
- ``<id>.frames``: all frames' JPEG bytes back to back in temporal order.

``num_frames`` is the number of frames the stored video holds. Frames are stored as JPEG (IJG quality scale,
`DEFAULT_QUALITY`) at short side `DEFAULT_SHORT_SIDE` unless the writer says otherwise in the manifest settings.
This package needs only the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
TEST_LABEL = -1
SHARD_SUFFIX = ".tar"
SIDECAR_SUFFIX = ".done.json"
MANIFEST_SUFFIX = ".manifest.json"
REQUIRED_META_KEYS = ("id", "label", "num_frames", "width", "height", "offsets", "lengths")
DEFAULT_SHORT_SIDE = 256
DEFAULT_QUALITY = 90
QUALITY_RANGE = (1, 95)


class MalformedSampleError(ValueError):
    """A sample's members do not follow the layout (missing member or metadata)."""


def shard_name(split: str, index: int) -> str:
    """Return the file name of shard `index` of `split`, e.g. ``train-000003.tar``."""
    return f"{split}-{index:06d}{SHARD_SUFFIX}"


def sidecar_path(shard_path: Path) -> Path:
    """Return the sidecar path of a shard."""
    return shard_path.with_name(shard_path.name + SIDECAR_SUFFIX)


def manifest_path(out_dir: Path, split: str) -> Path:
    """Return the manifest path of a split."""
    return Path(out_dir) / f"{split}{MANIFEST_SUFFIX}"


def pack_frames(jpeg_frames: Sequence[bytes]) -> tuple[bytes, list[int], list[int]]:
    """Concatenate JPEG frames and return (packed bytes, offsets, lengths)."""
    offsets, lengths, position = [], [], 0
    for frame in jpeg_frames:
        offsets.append(position)
        lengths.append(len(frame))
        position += len(frame)
    return b"".join(jpeg_frames), offsets, lengths


def encode_sample(
    video_id: str,
    label: int,
    template: str,
    jpeg_frames: Sequence[bytes],
    width: int,
    height: int,
    source_sar: str | None = None,
) -> list[tuple[str, bytes]]:
    """Encode one video as its two tar members [(<id>.json, bytes), (<id>.frames, bytes)].

    `source_sar` ("num:den") records a non-square source sample aspect ratio; None (square) adds no key.

    Raises
    ------
    ValueError
        If the video has no frame or the id contains a dot or a slash (WebDataset splits keys at the first dot).
    """
    if not jpeg_frames:
        raise ValueError(f"video {video_id!r} has no frame")
    if "." in video_id or "/" in video_id:
        raise ValueError(f"video id {video_id!r} must not contain '.' or '/'")
    packed, offsets, lengths = pack_frames(jpeg_frames)
    meta = {
        "id": video_id,
        "label": int(label),
        "template": template,
        "num_frames": len(jpeg_frames),
        "width": int(width),
        "height": int(height),
        "offsets": offsets,
        "lengths": lengths,
    }
    if source_sar is not None:
        meta["source_sar"] = source_sar
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    return [(f"{video_id}.json", meta_bytes), (f"{video_id}.frames", packed)]


def read_sample_meta(members: dict[str, Any]) -> dict[str, Any]:
    """Decode and check a sample's JSON member from its members {"json": bytes, "frames": bytes, "__key__": id}.

    Raises
    ------
    MalformedSampleError
        If a member is missing or the metadata lacks a key or disagrees with itself (the message names the key
        of the sample; the reader adds the shard).
    """
    key = members.get("__key__", "?")
    if "json" not in members or "frames" not in members:
        raise MalformedSampleError(f"sample {key!r} lacks its .json or .frames member")
    meta = json.loads(members["json"])
    missing = [name for name in REQUIRED_META_KEYS if name not in meta]
    if missing or len(meta["offsets"]) != meta["num_frames"] or meta["num_frames"] < 1:
        raise MalformedSampleError(f"sample {key!r} has malformed metadata {missing or ''}")
    return meta


def slice_frames(packed: bytes, meta: dict[str, Any], indices: Sequence[int]) -> list[bytes]:
    """Return the JPEG bytes of the given frame indices out of a packed ``.frames`` member."""
    view = memoryview(packed)
    return [
        bytes(view[meta["offsets"][index] : meta["offsets"][index] + meta["lengths"][index]]) for index in indices
    ]
