"""`make shards`, the loader, train.py and evaluate.py on splits with no usable video, one video, few videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import evaluate
import train
from data_pipeline import build_loader
from data_pipeline.stream import ShardDataError
from preprocess import make_shards
from preprocess.datasets.ssv2 import video_path
from shard_format import manifest_path, read_manifest, read_sidecar, shard_name, write_jpeg_split
from preprocess.synthetic import generate_dataset
from test_train import TINY_ARGS, clip_records, write_shards

UNKNOWN_TEMPLATE = "Juggling [something] while riding a unicycle"
SPLIT_FILES = ("train.json", "validation.json", "test.json")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A synthetic dataset of 16 videos (4 classes): 8 train, 4 validation, 4 test."""
    root = tmp_path_factory.mktemp("ssv2_small")
    generate_dataset(
        root, 4, num_frames=(6, 9), width=32, height=24, split_fractions=(0.5, 0.25, 0.25), classes=4, workers=2
    )
    return root


def _copy(source: Path, target: Path) -> Path:
    """A private copy of the dataset (labels and videos), to be altered by one test."""
    shutil.copytree(source, target)
    return target


def _labels(root: Path, file_name: str) -> list[dict]:
    """The entries of one annotation file."""
    return json.loads((root / "labels" / file_name).read_text())


def _write_labels(root: Path, file_name: str, entries: list[dict]) -> None:
    """Replace one annotation file."""
    (root / "labels" / file_name).write_text(json.dumps(entries))


def _run(root: Path, out: Path, *extra: str) -> int:
    """`make shards` with the small test settings; return its exit status."""
    return make_shards.main([
        "--data-root", str(root), "--out", str(out), "--short-side", "0", "--train-shards", "3",
        "--eval-shards", "2", "--workers", "1", "--no-progress", "--slice-index", "0", "--slice-count", "1", *extra,
    ])  # fmt: skip


def _tars(out: Path, split: str) -> list[Path]:
    """The tar files of one split in the output folder."""
    return sorted(out.glob(f"{split}-*.tar"))


def _assert_empty_split(out: Path, split: str) -> dict:
    """The split's manifest exists, counts no video and lists no shard; no tar of it was left."""
    manifest = read_manifest(manifest_path(out, split))
    assert manifest["num_samples"] == 0 and manifest["shards"] == [] and manifest["num_frames"] == 0
    assert _tars(out, split) == []
    return manifest


def _assert_full_split(out: Path, split: str, count: int) -> None:
    """The split's manifest counts `count` videos in non-empty tars."""
    manifest = read_manifest(manifest_path(out, split))
    assert manifest["num_samples"] == count and all(shard["num_samples"] > 0 for shard in manifest["shards"])
    assert [path.name for path in _tars(out, split)] == [shard["name"] for shard in manifest["shards"]]


def test_empty_annotation_file_gives_an_empty_manifest_and_the_other_splits(source, tmp_path, capsys):
    root = _copy(source, tmp_path / "root")
    _write_labels(root, "validation.json", [])
    out = tmp_path / "shards"
    assert _run(root, out) == make_shards.EXIT_OK
    _assert_empty_split(out, "validation")
    _assert_full_split(out, "train", 8)
    _assert_full_split(out, "test", 4)
    lines = [line for line in capsys.readouterr().out.splitlines() if "empty split" in line]
    assert lines == [f"validation: empty split, {root / 'labels' / 'validation.json'} lists no video; "
                     "its manifest lists no shard"]  # fmt: skip


def test_all_templates_unknown_follows_the_skip_limits(source, tmp_path, capsys):
    root = _copy(source, tmp_path / "root")
    entries = [dict(entry, template=UNKNOWN_TEMPLATE) for entry in _labels(root, "validation.json")]
    _write_labels(root, "validation.json", entries)
    out = tmp_path / "shards"
    assert _run(root, out) == make_shards.EXIT_TOO_MANY_SKIPPED  # 4 of 16 skipped > the default 1%
    manifest = _assert_empty_split(out, "validation")
    assert sorted(entry["id"] for entry in manifest["skipped"]) == sorted(entry["id"] for entry in entries)
    _assert_full_split(out, "train", 8)
    _assert_full_split(out, "test", 4)
    assert "validation: empty split, all 4 videos of" in capsys.readouterr().out
    assert _run(root, out, "--max-skip-fraction", "0.5") == make_shards.EXIT_OK
    assert _run(root, out, "--max-skip-fraction", "0.5", "--strict") == make_shards.EXIT_TOO_MANY_SKIPPED


def test_all_videos_broken_leaves_no_empty_tar_and_resumes(source, tmp_path, capsys):
    root = _copy(source, tmp_path / "root")
    test_ids = [entry["id"] for entry in _labels(root, "test.json")]
    for position, video_id in enumerate(test_ids):
        path = video_path(root, video_id)
        path.write_bytes(b"" if position % 2 else path.read_bytes()[:100])
    out = tmp_path / "shards"
    assert _run(root, out, "--max-skip-fraction", "0.5") == make_shards.EXIT_OK
    manifest = _assert_empty_split(out, "test")
    assert {entry["id"] for entry in manifest["skipped"]} == set(test_ids)
    for index in range(2):
        record = read_sidecar(out / shard_name("test", index))
        assert record is not None and record["num_samples"] == 0 and record["bytes"] == 0
    printed = capsys.readouterr().out
    assert "test: empty split, all 4 videos of" in printed and "zero-byte video file: 2" in printed
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    assert _run(root, out, "--max-skip-fraction", "0.5") == make_shards.EXIT_OK  # complete: nothing rewritten
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir() if "manifest" not in path.name} == {
        name: stamp for name, stamp in before.items() if "manifest" not in name
    }


def test_one_video_and_more_shards_than_videos(source, tmp_path):
    root = _copy(source, tmp_path / "root")
    _write_labels(root, "validation.json", _labels(root, "validation.json")[:1])
    out = tmp_path / "shards"
    assert _run(root, out, "--train-shards", "20", "--max-skip-fraction", "0") == make_shards.EXIT_OK
    _assert_full_split(out, "validation", 1)
    assert len(read_manifest(manifest_path(out, "validation"))["shards"]) == 1
    train_manifest = read_manifest(manifest_path(out, "train"))
    assert [shard["num_samples"] for shard in train_manifest["shards"]] == [1] * 8
    assert train_manifest["settings"]["num_shards"] == 8


def test_write_jpeg_split_of_no_video_writes_only_the_manifest(tmp_path):
    manifest = write_jpeg_split(tmp_path, "test", [], 4, {"purpose": "empty"})
    assert manifest["num_samples"] == 0 and manifest["shards"] == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["test.manifest.json"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """Shards with train and validation videos and an empty test split, and a one-step tiny checkpoint."""
    folder = tmp_path_factory.mktemp("tiny")
    shards = write_shards(folder / "shards", clip_records(videos_per_class=2, seed=5), num_shards=1)
    write_jpeg_split(shards, "test", [], 1, {"num_classes": 4})
    output = folder / "run"
    assert train.main(["--mode", "vanilla", "--frames", "2", "--shards", str(shards), "--output", str(output),
                       "--epochs", "1", "--batch-size", "2", *TINY_ARGS]) == 0  # fmt: skip
    return shards, output / train.LAST_CHECKPOINT


def test_loader_train_and_evaluate_stop_on_a_split_without_video(tiny_run, tmp_path):
    shards, checkpoint = tiny_run
    manifest = str(manifest_path(shards, "test"))
    for is_training in (True, False):
        with pytest.raises(ShardDataError, match="holds no video") as raised:
            build_loader(shards, "test", frames=(2,), batch_size=2, train=is_training, decode="cpu", device="cpu")
        assert manifest in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(SystemExit) as stopped:
        train.main(["--mode", "vanilla", "--frames", "2", "--shards", str(shards), "--output", str(tmp_path / "t"),
                    "--train-split", "test", "--epochs", "1", "--batch-size", "2", *TINY_ARGS])  # fmt: skip
    assert manifest in str(stopped.value.code) and "holds no video" in str(stopped.value.code)
    assert not (tmp_path / "t" / train.LAST_CHECKPOINT).exists()
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(["--checkpoints", str(checkpoint), "--frames", "2", "--shards", str(shards), "--split", "test",
                       "--output", str(tmp_path / "e"), "--workers", "0", "--batch-size", "2"])  # fmt: skip
    assert manifest in str(stopped.value.code) and "holds no video" in str(stopped.value.code)
    assert not (tmp_path / "e" / "eval.json").exists()
