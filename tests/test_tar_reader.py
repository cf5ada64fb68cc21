"""The lean tar reader against WebDataset's, on real shards and on tars written by other tools' formats."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from pipeline_helpers import make_videos, write_split

from data_pipeline import build_loader
from data_pipeline.stream import ShardDataError, iterate_tar, read_split
from data_pipeline.tar_reader import split_name

FRAME_COUNTS = (9, 5, 3)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-shard packed split of 7 small videos."""
    root = tmp_path_factory.mktemp("tar_reader_shards")
    write_split(root, "train", make_videos(7, FRAME_COUNTS), (4, 3))
    return root


def samples_of(path: Path, reader: str) -> list[dict]:
    """Every sample of a shard without the reader-specific fields."""
    return [{key: value for key, value in raw.items() if key != "__local_path__"} for raw in iterate_tar(path, reader)]


def test_lean_reader_yields_exactly_webdataset_samples(shards: Path) -> None:
    for entry in read_split(shards, "train"):
        lean, reference = samples_of(entry.path, "lean"), samples_of(entry.path, "webdataset")
        assert len(lean) == entry.num_samples == len(reference)
        assert lean == reference
        assert set(lean[0]) == {"__key__", "__url__", "json", "frames"}


def write_tar(path: Path, tar_format: int, members: list[tuple[str, bytes]], extra: str | None = None) -> None:
    """Write a tar in the given format with regular members, plus a directory and a symlink (skipped by readers)."""
    with tarfile.open(path, "w", format=tar_format) as archive:
        directory = tarfile.TarInfo("folder")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
            if name == extra:
                link = tarfile.TarInfo("folder/a-link.txt")
                link.type, link.linkname = tarfile.SYMTYPE, name
                archive.addfile(link)


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_links_and_meta_members_read_as_webdataset_does(tmp_path: Path, tar_format: int) -> None:
    long_stem = "deep/" * 12 + "v" * 60  # 120 characters: pax or GNU long name (ustar: the prefix field)
    members = [
        ("__meta__/index.json", b"{}"),
        (f"{long_stem}.json", b'{"a": 1}'),
        (f"{long_stem}.frames", bytes(range(256)) * 3),
        ("short.1.JSON", b"[]"),
        ("short.1.frames", b"\x00" * 512),
        ("other.txt", b"x" * 511),
    ]
    path = tmp_path / "shard.tar"
    write_tar(path, tar_format, members, extra="other.txt")
    lean, reference = samples_of(path, "lean"), samples_of(path, "webdataset")
    assert lean == reference
    assert [sample["__key__"] for sample in lean] == [long_stem, "short", "other"]
    assert lean[0]["frames"] == bytes(range(256)) * 3 and lean[1]["1.json"] == b"[]"


def test_split_name_follows_webdataset() -> None:
    assert split_name("a/b.c/78687.seg.json") == ("a/b.c/78687", "seg.json")
    assert split_name("v0001.FRAMES") == ("v0001", "frames")
    assert split_name("README") == ("README", "")


def test_damaged_header_and_cut_member_name_the_shard(shards: Path, tmp_path: Path) -> None:
    source = read_split(shards, "train")[0].path
    with tarfile.open(source) as archive:
        frames_member = archive.getmembers()[1]
    data = bytearray(source.read_bytes())
    data[frames_member.offset + 10] ^= 0xFF  # inside the second header's name field: checksum no longer matches
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(source.read_bytes()[: frames_member.offset_data + 100])  # stops inside the .frames member
    for path in (damaged, cut):
        with pytest.raises(ShardDataError, match=rf"{path.name}: unreadable shard .*make verify-shards"):
            list(iterate_tar(path))


def test_loader_gives_identical_batches_with_either_reader(shards: Path) -> None:
    def batches(reader: str) -> list[dict]:
        loader = build_loader(shards, frames=(2, 4), batch_size=2, decode="cpu", device="cpu", num_workers=0,
                              crop_size=16, test_resize=32, seed=3, tar_reader=reader)  # fmt: skip
        return list(loader)

    lean, reference = batches("lean"), batches("webdataset")
    assert [batch["id"] for batch in lean] == [batch["id"] for batch in reference]
    for mine, theirs in zip(lean, reference):
        for frames in (2, 4):
            assert torch.equal(mine["videos"][frames], theirs["videos"][frames])
    with pytest.raises(ValueError, match="tar_reader='tarfile'; use one of"):
        build_loader(shards, decode="cpu", device="cpu", tar_reader="tarfile")
