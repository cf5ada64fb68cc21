"""Writing and checking shard files: deterministic tars, sidecars, manifests, the settings hash.

A shard ``<split>-NNNNNN.tar`` is written under a temporary name and renamed when complete; then its sidecar
``<split>-NNNNNN.tar.done.json`` is written atomically. A shard without a sidecar carrying the run's settings
hash is not complete. A shard that ends up with no sample (every one of its videos skipped) keeps no tar: its
sidecar alone records it, with 0 samples and 0 bytes. The manifest ``<split>.manifest.json`` is assembled from
the sidecars and lists only the shards holding samples; a split without any usable video gets a manifest with
no shard and ``num_samples`` 0.

Manifest schema: {"format_version", "split", "settings" (the writer's settings plus their "hash"),
"num_samples", "num_frames", "shards": [{"name", "num_samples", "num_frames", "bytes"}], "skipped":
[{"id", "reason"}], optional "class_names" (class-index order), optional "dataset" (the layout `make shards` read,
e.g. "k400") and "flip" (whether training may flip the frames horizontally)}. The optional keys are outside the
hashed settings: they change no shard byte.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.atomic import atomic_file, write_json_atomic
from shard_format.sample import FORMAT_VERSION, encode_sample, manifest_path, shard_name, sidecar_path

TAR_MEMBER_MODE = 0o644
TAR_MTIME = 0
MISSING_NAMES_SHOWN = 20


class ManifestError(RuntimeError):
    """A manifest cannot be assembled or read (a missing shard, a settings mismatch, a malformed file)."""


def settings_hash(settings: dict[str, Any]) -> str:
    """Return a short stable hash of a JSON-serialisable settings dict (key order does not matter)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """Return a TarInfo with fixed metadata so the same content gives byte-identical shards."""
    info = tarfile.TarInfo(name=name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar_atomic(path: Path, members: Iterable[tuple[str, bytes]]) -> int:
    """Write a tar of `members` under a temporary name, fsync, rename to `path`; return its size in bytes."""
    with atomic_file(path) as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as archive:
            for name, payload in members:
                archive.addfile(_tar_info(name, len(payload)), io.BytesIO(payload))
    return Path(path).stat().st_size


def write_sidecar(
    shard_path: Path, num_samples: int, num_frames: int, skipped: list[dict[str, str]], settings_digest: str
) -> dict[str, Any]:
    """Record a completed shard: its samples, frames, bytes, skipped ids and the settings hash.

    A shard with no sample is recorded without its tar (removed here): 0 samples, 0 bytes.
    """
    shard_path = Path(shard_path)
    if num_samples == 0:
        shard_path.unlink(missing_ok=True)
    record = {
        "name": shard_path.name,
        "num_samples": int(num_samples),
        "num_frames": int(num_frames),
        "bytes": shard_path.stat().st_size if num_samples else 0,
        "skipped": skipped,
        "settings_hash": settings_digest,
    }
    write_json_atomic(sidecar_path(Path(shard_path)), record)
    return record


def read_sidecar(shard_path: Path) -> dict[str, Any] | None:
    """Return a shard's sidecar record, or None when it is missing, unreadable or disagrees with its shard.

    A record of 0 samples and 0 bytes stands for an empty shard, which has no tar.
    """
    shard_path = Path(shard_path)
    record_path = sidecar_path(shard_path)
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    if not shard_path.exists():
        return record if record.get("num_samples") == 0 and record.get("bytes") == 0 else None
    if record.get("bytes") != shard_path.stat().st_size:
        return None
    return record


def shard_is_complete(shard_path: Path, settings_digest: str) -> bool:
    """True when the shard and its sidecar exist, agree on size and carry `settings_digest`."""
    record = read_sidecar(shard_path)
    return record is not None and record.get("settings_hash") == settings_digest


def assemble_manifest(
    out_dir: Path,
    split: str,
    num_shards: int,
    settings: dict[str, Any],
    extra_skipped: Sequence[dict[str, str]] = (),
    class_names: Sequence[str] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and atomically write ``<split>.manifest.json`` from the sidecars of shards 0..num_shards-1.

    Only shards holding samples are listed; with `num_shards` 0 (no usable video) the manifest lists no shard and
    counts 0 samples.

    `extra_skipped` lists entries skipped before any shard was assigned (e.g. a template not in labels.json);
    they join the sidecars' skipped ids in the manifest's "skipped". `class_names` (labels.json's templates in
    class-index order) go into the manifest's "class_names", outside the hashed settings: naming the classes
    changes no shard byte. `facts` are further top-level keys outside the hashed settings ("dataset", "flip").

    Raises
    ------
    ManifestError
        If any shard or sidecar is missing or carries another settings hash.
    """
    out_dir = Path(out_dir)
    digest = settings_hash(settings)
    shards, skipped, missing = [], [], []
    for index in range(num_shards):
        shard_path = out_dir / shard_name(split, index)
        record = read_sidecar(shard_path)
        if record is None or record.get("settings_hash") != digest:
            missing.append(shard_path.name)
            continue
        if record["num_samples"] > 0:
            shards.append({key: record[key] for key in ("name", "num_samples", "num_frames", "bytes")})
        skipped.extend(record.get("skipped", []))
    if missing:
        raise ManifestError(
            f"{out_dir}: {len(missing)} of {num_shards} {split} shards missing or from other settings "
            f"({', '.join(missing[:MISSING_NAMES_SHOWN])}{' ...' if len(missing) > MISSING_NAMES_SHOWN else ''}); "
            "rerun the shard job, it redoes only those"
        )
    skipped.extend(dict(entry) for entry in extra_skipped)
    manifest = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "settings": dict(settings, hash=digest),
        "num_samples": sum(shard["num_samples"] for shard in shards),
        "num_frames": sum(shard["num_frames"] for shard in shards),
        "shards": shards,
        "skipped": sorted(skipped, key=lambda entry: entry["id"]),
    }
    if class_names is not None:
        manifest["class_names"] = [str(name) for name in class_names]
    clashing = sorted(set(facts or {}) & set(manifest))
    if clashing:
        raise ValueError(f"manifest facts {clashing} would replace the manifest's own keys")
    manifest.update(facts or {})
    write_json_atomic(manifest_path(out_dir, split), manifest)
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and check a manifest; raise ManifestError with the file name and the fix on any problem."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ManifestError(f"{path}: no manifest; run `make shards` (it finalizes the manifests)") from error
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON ({error}); rerun `make shards` to rebuild it") from error
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format_version {manifest.get('format_version')} but this code reads {FORMAT_VERSION}; "
            "rebuild the shards with this version"
        )
    return manifest


def shard_bounds(count: int, num_shards: int) -> list[int]:
    """Return the num_shards + 1 boundaries cutting `count` ordered items into near-equal shards (i * count // n).

    No item and no shard gives ``[0]``.

    Raises
    ------
    ValueError
        If items are to be cut into fewer than one shard.
    """
    if num_shards < 1:
        if count:
            raise ValueError(f"{count} items need at least one shard, got {num_shards}")
        return [0]
    return [index * count // num_shards for index in range(num_shards + 1)]


def write_jpeg_split(
    out_dir: Path,
    split: str,
    videos: Sequence[dict[str, Any]],
    num_shards: int,
    settings: dict[str, Any],
    shard_sizes: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write already-encoded JPEG videos as `num_shards` shards plus sidecars and the manifest.

    Parameters
    ----------
    out_dir : Path
        Output folder (created).
    split : str
        Split name, e.g. "train".
    videos : sequence of dict
        Each {"id", "label", "template", "frames": [jpeg bytes], "width", "height"}, already in shard order;
        video i goes to shard i * num_shards // len(videos).
    num_shards : int
        Number of shards (capped at len(videos); no video gives no shard).
    settings : dict
        Recorded in the manifest; its hash guards the sidecars.
    shard_sizes : sequence of int, optional
        Videos per shard, in order (uneven sizes allowed; they must add up to len(videos)); replaces the even
        split and `num_shards`.
    class_names, facts : optional
        Written into the manifest outside the settings (see `assemble_manifest`).

    Returns
    -------
    dict
        The manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if shard_sizes is None:
        num_shards = min(max(1, num_shards), len(videos))
        bounds = shard_bounds(len(videos), num_shards)
    elif sum(shard_sizes) != len(videos):
        raise ValueError(f"shard sizes {list(shard_sizes)} do not add up to {len(videos)} videos")
    else:
        bounds = list(itertools.accumulate(shard_sizes, initial=0))
    digest = settings_hash(settings)
    for index, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        members: list[tuple[str, bytes]] = []
        frames = 0
        for video in videos[start:stop]:
            members += encode_sample(
                video["id"], video["label"], video["template"], video["frames"], video["width"], video["height"]
            )
            frames += len(video["frames"])
        shard_path = out_dir / shard_name(split, index)
        if members:
            write_tar_atomic(shard_path, members)
        write_sidecar(shard_path, stop - start, frames, [], digest)
    return assemble_manifest(out_dir, split, len(bounds) - 1, settings, class_names=class_names, facts=facts)
