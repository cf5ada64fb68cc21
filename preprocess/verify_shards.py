"""`make verify-shards`: check every shard against its manifest; exit non-zero on any mismatch and say what.

Usage::

    python -m preprocess.verify_shards --shards SHARDS [--splits train validation test] [--full-decode]

Checked for every split with a manifest: the manifest's totals; every listed shard exists with the listed size;
each shard holds exactly the listed number of samples and frames; every sample has exactly two members
``<id>.json`` and ``<id>.frames`` with the key as id; the offsets and lengths tile the packed member exactly;
every frame starts with the JPEG SOI marker and ends with EOI; no id appears twice or also as skipped (but for
a later listing of it skipped as a duplicate id). With
``--full-decode`` every JPEG is decoded (Pillow) and its size compared with the sample's width and height.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from shard_format import MANIFEST_SUFFIX, SPLITS, ManifestError, manifest_path, read_manifest

LOGGER = logging.getLogger("preprocess.verify_shards")

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
META_SUFFIX = ".json"
FRAMES_SUFFIX = ".frames"
META_FIELDS = ("id", "label", "template", "num_frames", "width", "height", "offsets", "lengths")
PROBLEMS_SHOWN = 50
EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_NOTHING_TO_CHECK = 2
DUPLICATE_REASON = "duplicate id"  # make_shards' reason for a second listing of an id (preprocess.datasets.base)


def iter_samples(shard_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {member suffix: bytes}) per sample in tar order (key = name up to the first dot).

    A suffix seen twice for one key is reported under a "duplicate" name, so the member check fails.
    """
    key: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(shard_path, mode="r|") as archive:
        for member in archive:
            member_key, dot, rest = member.name.partition(".")
            payload = archive.extractfile(member).read() if member.isfile() else b""
            if key is not None and member_key != key:
                yield key, members
                members = {}
            key = member_key
            suffix = dot + rest
            members[f"duplicate {suffix}" if suffix in members else suffix] = payload
    if key is not None:
        yield key, members


def check_sample(key: str, members: dict[str, bytes], full_decode: bool) -> tuple[list[str], dict[str, Any]]:
    """Return (problems, metadata) for one sample."""
    problems: list[str] = []
    names = sorted(members)
    if names != [FRAMES_SUFFIX, META_SUFFIX]:
        return [f"sample {key}: members {names}, expected exactly ['.frames', '.json']"], {}
    try:
        meta = json.loads(members[META_SUFFIX])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return [f"sample {key}: {key}.json is not valid JSON ({error})"], {}
    missing = [field for field in META_FIELDS if field not in meta]
    if missing:
        return [f"sample {key}: {key}.json lacks {missing}"], {}
    if meta["id"] != key:
        problems.append(f"sample {key}: json id {meta['id']!r} differs from the key")
    problems += _check_frames(key, meta, members[FRAMES_SUFFIX], full_decode)
    return problems, meta


def _check_frames(key: str, meta: dict[str, Any], packed: bytes, full_decode: bool) -> list[str]:
    """Check the offsets, lengths, JPEG markers (and with full_decode the decoded size) of a sample's frames."""
    offsets, lengths = meta["offsets"], meta["lengths"]
    if not (meta["num_frames"] == len(offsets) == len(lengths)) or meta["num_frames"] < 1:
        return [f"sample {key}: num_frames {meta['num_frames']}, {len(offsets)} offsets, {len(lengths)} lengths"]
    position = 0
    for index, (offset, length) in enumerate(zip(offsets, lengths)):
        if offset != position or length < 4:
            return [f"sample {key}: frame {index} at offset {offset} length {length}, expected offset {position}"]
        position += length
    if position != len(packed):
        return [f"sample {key}: frames add up to {position} bytes but {key}.frames holds {len(packed)}"]
    problems = []
    for index, (offset, length) in enumerate(zip(offsets, lengths)):
        frame = packed[offset : offset + length]
        if frame[:2] != JPEG_SOI or frame[-2:] != JPEG_EOI:
            problems.append(f"sample {key}: frame {index} lacks the JPEG SOI/EOI markers")
        elif full_decode:
            problems += _decode_problem(key, index, frame, meta["width"], meta["height"])
    return problems


def _decode_problem(key: str, index: int, frame: bytes, width: int, height: int) -> list[str]:
    """Decode one JPEG with Pillow; return a problem when it fails or has another size."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(frame)) as image:
            image.load()
            size = image.size
    except (OSError, SyntaxError, ValueError) as error:
        return [f"sample {key}: frame {index} does not decode ({error})"]
    if size != (width, height):
        return [f"sample {key}: frame {index} decodes to {size[0]}x{size[1]}, json says {width}x{height}"]
    return []


def check_shard(shard_path: Path, listed: dict[str, Any], full_decode: bool) -> tuple[list[str], list[str]]:
    """Check one shard against its manifest entry; return (problems, sample ids)."""
    if not shard_path.exists():
        return [f"{shard_path}: listed in the manifest but missing"], []
    problems, ids, frames = [], [], 0
    if shard_path.stat().st_size != listed["bytes"]:
        problems.append(f"{shard_path}: {shard_path.stat().st_size} bytes, manifest says {listed['bytes']}")
    try:
        for key, members in iter_samples(shard_path):
            sample_problems, meta = check_sample(key, members, full_decode)
            problems += [f"{shard_path.name}: {problem}" for problem in sample_problems]
            ids.append(key)
            frames += int(meta.get("num_frames", 0)) if meta else 0
    except (tarfile.TarError, OSError, EOFError) as error:
        return problems + [f"{shard_path}: unreadable tar ({error}); rerun make shards"], ids
    if len(ids) != listed["num_samples"] or frames != listed["num_frames"]:
        problems.append(
            f"{shard_path}: {len(ids)} samples / {frames} frames, manifest says "
            f"{listed['num_samples']} / {listed['num_frames']}"
        )
    return problems, ids


def check_split(shards_dir: Path, split: str, full_decode: bool) -> tuple[list[str], int]:
    """Check one split's manifest and every shard it lists; return (problems, samples seen)."""
    path = manifest_path(shards_dir, split)
    try:
        manifest = read_manifest(path)
    except ManifestError as error:
        return [str(error)], 0
    problems: list[str] = []
    shards = manifest.get("shards", [])
    if sum(shard["num_samples"] for shard in shards) != manifest["num_samples"]:
        problems.append(f"{path}: num_samples {manifest['num_samples']} differs from the sum over its shards")
    if sum(shard["num_frames"] for shard in shards) != manifest["num_frames"]:
        problems.append(f"{path}: num_frames {manifest['num_frames']} differs from the sum over its shards")
    seen: set[str] = set()
    for listed in shards:
        shard_problems, ids = check_shard(path.parent / listed["name"], listed, full_decode)
        problems += shard_problems
        problems += [f"{split}: id {video_id} appears more than once" for video_id in ids if video_id in seen]
        seen.update(ids)
    # A repeated listing of a written id is skipped as a duplicate: that id is rightly both written and skipped.
    skipped_ids = {entry["id"] for entry in manifest.get("skipped", [])
                   if not str(entry.get("reason", "")).startswith(DUPLICATE_REASON)}
    both = sorted(seen & skipped_ids)
    if both:
        problems.append(f"{path}: {len(both)} ids both written and skipped (e.g. {both[0]})")
    return problems, len(seen)


def verify(shards_dir: Path, splits: Sequence[str], full_decode: bool) -> tuple[list[str], dict[str, int]]:
    """Check every split that has a manifest; return (problems, samples per split)."""
    present = [split for split in splits if manifest_path(shards_dir, split).exists()]
    problems: list[str] = []
    counts: dict[str, int] = {}
    for split in present:
        split_problems, counts[split] = check_split(shards_dir, split, full_decode)
        problems += split_problems
    return problems, counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m preprocess.verify_shards", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, required=True, help="folder with the shards and manifests")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--full-decode", action="store_true", help="decode every JPEG and check its size")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; print a summary; return 0 only when everything matches."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if not any(manifest_path(args.shards, split).exists() for split in args.splits):
        LOGGER.error("%s: no *%s for %s; run `make shards` first", args.shards, MANIFEST_SUFFIX, args.splits)
        return EXIT_NOTHING_TO_CHECK
    problems, counts = verify(args.shards, args.splits, args.full_decode)
    for problem in problems[:PROBLEMS_SHOWN]:
        print(f"MISMATCH {problem}")
    if len(problems) > PROBLEMS_SHOWN:
        print(f"... and {len(problems) - PROBLEMS_SHOWN} more")
    checked = ", ".join(f"{split} {count} samples" for split, count in counts.items())
    mode = "full decode" if args.full_decode else "markers only"
    print(f"verify-shards ({mode}): {checked}; {len(problems)} problems")
    return EXIT_MISMATCH if problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
