"""The dataset readers on malformed and odd label files, class lists, shard keys and frame folders.

A malformed label file must stop `make shards` before any shard is written, with one message naming the file, the
line and the fix (exit 2); a flag that does not fit the dataset is a usage error naming it.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from preprocess import make_shards
from preprocess.datasets import DATASETS, AnnotationError
from preprocess.datasets.base import make_video_id
from preprocess.datasets.class_lists import read_category_file, read_class_list
from preprocess.frame_folders import read_frame_folder

SSV1_LABELS = ["Holding something", "Dropping something", "Pushing something"]


def _write(path: Path, text: str | bytes) -> Path:
    """Write a file (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _ssv1(root: Path, labels: str | None = None, train: str | bytes | None = None) -> list[str]:
    """A small SSv1 label set (no frames needed to reach the label checks); returns the make_shards flags."""
    _write(root / "something-something-v1-labels.csv", "\n".join(SSV1_LABELS) + "\n" if labels is None else labels)
    _write(root / "something-something-v1-train.csv", "1;Holding something\n2;Pushing something\n"
           if train is None else train)
    _write(root / "something-something-v1-validation.csv", "3;Dropping something\n")
    _write(root / "something-something-v1-test.csv", "4\n")
    return ["--dataset", "ssv1"]


def _k400(root: Path, train: str, validation: str = "label,youtube_id,time_start,time_end,split\n") -> list[str]:
    """A Kinetics annotation folder (no video needed to reach the label checks)."""
    _write(root / "annotations" / "train.csv", train)
    _write(root / "annotations" / "val.csv", validation)
    _write(root / "annotations" / "test.csv", "youtube_id,time_start,time_end,split\n")
    return ["--dataset", "k400"]


K400_HEADER = "label,youtube_id,time_start,time_end,split\n"


def _hmdb51(root: Path, line: str = "a_video.avi 1 ", split_ids: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    """HMDB51 split files of two classes."""
    for name in ("brush_hair", "cartwheel"):
        for split_id in split_ids:
            _write(root / "testTrainMulti_7030_splits" / f"{name}_test_split{split_id}.txt",
                   f"{name}_{line}\n{name}_b.avi 2 \n")
    return ["--dataset", "hmdb51"]


def _tsm(root: Path, train: str = "walk/1 8 0\n", categories: str = "walk\nrun\n") -> list[str]:
    """A TSM train list and category file."""
    return ["--dataset", "tsm-list", "--train-list", str(_write(root / "train.txt", train)), "--categories",
            str(_write(root / "categories.txt", categories)), "--flip"]


MALFORMED = {
    "ssv1 repeated class": (lambda root: _ssv1(root, labels="Holding something\nPushing something\nHolding "
                                                          "something\n"),
                            "something-something-v1-labels.csv:3: class 'Holding something' already on line 1"),
    "ssv1 empty label file": (lambda root: _ssv1(root, labels="\n"), "something-something-v1-labels.csv: no class"),
    "ssv1 line without label": (lambda root: _ssv1(root, train="1;Holding something\n2\n"),
                                "something-something-v1-train.csv:2: expected 'id;class name'"),
    "ssv1 id with a slash": (lambda root: _ssv1(root, train="a/1;Holding something\n"),
                             "something-something-v1-train.csv:1: video id 'a/1'"),
    "ssv1 not utf-8": (lambda root: _ssv1(root, train=b"1;Holding \xff\xfe\n"),
                       "something-something-v1-train.csv: not UTF-8 text"),
    "k400 header": (lambda root: _k400(root, "label,youtube_id,start,end\nx,abc,1,11\n"),
                    "annotations/train.csv:1: expected the header 'label,youtube_id,time_start,time_end,split'"),
    "k400 field count": (lambda root: _k400(root, K400_HEADER + "abseiling,abc,1,11,train\nair drumming,x,1,11\n"),
                         "annotations/train.csv:3: 4 fields, the header has 5"),
    "k400 time": (lambda root: _k400(root, K400_HEADER + "abseiling,abc,one,11,train\n"),
                  "annotations/train.csv:2: time_start 'one' is not a whole number of seconds"),
    "k400 empty train label": (lambda root: _k400(root, K400_HEADER + "abseiling,abc,1,11,train\n,abd,1,11,train\n"),
                               "annotations/train.csv:3: empty label"),
    "k400 empty validation label": (lambda root: _k400(root, K400_HEADER + "abseiling,abc,1,11,train\n",
                                                       K400_HEADER + ",abd,1,11,val\n"),
                                    "annotations/val.csv:2: empty label in the validation CSV"),
    "k400 youtube id": (lambda root: _k400(root, K400_HEADER + "abseiling,a.b,1,11,train\n"),
                        "annotations/train.csv:2: youtube_id 'a.b'"),
    "hmdb51 no split folder": (lambda root: ["--dataset", "hmdb51"], "testTrainMulti_7030_splits: no such folder"),
    "hmdb51 flag": (lambda root: _hmdb51(root, line="a.avi 3"),
                    "brush_hair_test_split1.txt:1: expected '<video>.avi <0|1|2>'"),
    "hmdb51 missing split file": (lambda root: [*_hmdb51(root, split_ids=(1,)), "--split-id", "2"],
                                  "brush_hair_test_split2.txt: file not found"),
    "tsm fields": (lambda root: _tsm(root, train="walk/1 8 0\nwalk/2 8\n"),
                   "train.txt:2: expected '<folder> <num_frames> <label>'"),
    "tsm frame count": (lambda root: _tsm(root, train="walk/1 eight 0\n"), "train.txt:1: num_frames 'eight'"),
    "tsm label": (lambda root: _tsm(root, train="walk/1 8 first\n"), "train.txt:1: label 'first'"),
    "tsm category repeated": (lambda root: _tsm(root, categories="walk\nrun\nwalk\n"),
                              "categories.txt:3: class 'walk' already on line 1"),
    "tsm category index gap": (lambda root: _tsm(root, categories="walk 0\nrun 2\n"),
                               "categories.txt: indices must be 0..1, index 1 is missing"),
    "tsm category index twice": (lambda root: _tsm(root, categories="walk 0\nrun 0\n"),
                                 "categories.txt:2: index 0 already on line 1"),
    "tsm categories empty": (lambda root: _tsm(root, categories=""), "categories.txt: no class name"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_label_file_stops_before_any_shard_naming_file_and_line(case, tmp_path, caplog):
    make_flags, expected = MALFORMED[case]
    root = tmp_path / "data"
    root.mkdir()
    flags = make_flags(root)
    out = tmp_path / "shards"
    with caplog.at_level(logging.ERROR, logger="preprocess.make_shards"):
        status = make_shards.main([*flags, "--data-root", str(root), "--out", str(out), "--workers", "1",
                                   "--no-progress", "--slice-index", "0", "--slice-count", "1"])
    assert status == make_shards.EXIT_BAD_INPUT
    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(messages) == 1 and expected in messages[0], messages
    assert not out.exists() or not any(out.iterdir())


FLAG_ERRORS = {
    "tsm-list without a flip rule": (["--dataset", "tsm-list", "--train-list", "t.txt", "--categories", "c.txt"],
                                     "needs the flip rule"),
    "tsm-list without lists": (["--dataset", "tsm-list", "--categories", "c.txt", "--flip"], "needs list files"),
    "tsm-list bad frame pattern": (["--dataset", "tsm-list", "--train-list", "t.txt", "--categories", "c.txt",
                                    "--flip", "--frame-pattern", "img_{}_{}.jpg"], "one integer field"),
    "fps on frame folders": (["--dataset", "ssv1", "--fps", "10"], "--fps resamples video files"),
    "another dataset's flag": (["--dataset", "k400", "--split-id", "2"], "--split-id applies to --dataset hmdb51"),
    "a split the dataset has not": (["--dataset", "hmdb51", "--splits", "test"], "has no test split"),
    "a frame rate of zero": (["--dataset", "k400", "--fps", "0"], "positive frame rate"),
}


@pytest.mark.parametrize("case", sorted(FLAG_ERRORS))
def test_flags_that_do_not_fit_the_dataset_are_refused(case, tmp_path, capsys):
    flags, expected = FLAG_ERRORS[case]
    with pytest.raises(SystemExit) as raised:
        make_shards.parse_args([*flags, "--data-root", str(tmp_path), "--out", str(tmp_path / "s")])
    assert raised.value.code == 2 and expected in capsys.readouterr().err


def test_default_dataset_is_ssv2_and_each_dataset_fills_its_defaults(tmp_path):
    base = ["--data-root", str(tmp_path), "--out", str(tmp_path / "s")]
    ssv2 = make_shards.parse_args(base)
    assert (ssv2.dataset, ssv2.splits, ssv2.short_side, ssv2.flip) == ("ssv2", ["train", "validation", "test"],
                                                                         256, False)
    ssv1 = make_shards.parse_args([*base, "--dataset", "ssv1"])
    assert (ssv1.short_side, ssv1.flip) == (0, False)
    hmdb = make_shards.parse_args([*base, "--dataset", "hmdb51"])
    assert (hmdb.splits, hmdb.short_side, hmdb.flip) == (["train", "validation"], 256, True)
    tsm = make_shards.parse_args([*base, "--dataset", "tsm-list", "--val-list", "v", "--categories", "c", "--no-flip"])
    assert (tsm.splits, tsm.flip) == (["validation"], False)
    assert set(DATASETS) == {"ssv2", "ssv1", "k400", "hmdb51", "tsm-list"}


def test_unusable_entries_are_kept_with_a_reason(tmp_path):
    root = tmp_path / "k400"
    _k400(root, K400_HEADER + "abseiling,abc,1,11,train\nabseiling,abc,1,11,train\n",
          K400_HEADER + "juggling,abd,1,11,val\nabseiling,abc,1,11,val\n")
    index = DATASETS["k400"].read(root, ("train", "validation"), None)
    train = index.entries["train"]
    assert [entry.skip_reason for entry in train] == [None, "duplicate id: abc_000001_000011 already in "
                                                            "annotations/train.csv"]
    assert [entry.skip_reason for entry in index.entries["validation"]] == [
        "unknown class: 'juggling' (not a label of annotations/train.csv)",
        "duplicate id: abc_000001_000011 already in annotations/train.csv"]
    assert train[0].source.endswith("train/abc_000001_000011.mp4")  # not found: the decoder skips it as missing


def test_tsm_lists_read_folders_with_spaces_and_unlabelled_test_lines(tmp_path):
    from preprocess.datasets import tsm_list

    args = make_shards.parse_args(["--dataset", "tsm-list", "--data-root", str(tmp_path), "--out", str(tmp_path),
                                   "--train-list", str(_write(tmp_path / "t.txt", "air drumming/v1 12 1\nv2 3 0\n")),
                                   "--test-list", str(_write(tmp_path / "e.txt", "my clip 7\nother 5\n")),
                                   "--categories", str(_write(tmp_path / "c.txt", "run 1\nair drumming 0\n")),
                                   "--no-flip"])
    index = tsm_list.read_dataset(tmp_path, args.splits, args)
    assert index.class_names == ["air drumming", "run"]
    train, test = index.entries["train"], index.entries["test"]
    assert [(entry.video_id, entry.num_frames, entry.label, entry.template) for entry in train] == [
        ("air_drumming~v1", 12, 1, "run"), ("v2", 3, 0, "air drumming")]
    assert [(entry.video_id, entry.num_frames, entry.label) for entry in test] == [("my_clip", 7, -1), ("other", 5, -1)]
    assert train[0].source == str(tmp_path / "air drumming" / "v1")


def test_category_files_and_class_lists_in_every_form(tmp_path):
    assert read_category_file(_write(tmp_path / "a.txt", "b\na\n\n")) == ["b", "a"]
    assert read_category_file(_write(tmp_path / "b.txt", "walk fast 1\nrun 0\n")) == ["run", "walk fast"]
    assert read_category_file(_write(tmp_path / "c.txt", "class 1\nclass 2\n"), "lines") == ["class 1", "class 2"]
    with pytest.raises(AnnotationError, match="c.txt:1: expected 'name index'"):
        read_category_file(_write(tmp_path / "c.txt", "walk\nrun 0\n"), "name-index")
    names = ["a", "b", "c"]
    assert read_class_list(_write(tmp_path / "m.json", json.dumps({"class_names": names, "split": "x"}))) == names
    assert read_class_list(_write(tmp_path / "l.json", json.dumps(names))) == names
    assert read_class_list(_write(tmp_path / "labels.json", json.dumps({"c": "2", "a": "0", "b": "1"}))) == names
    assert read_class_list(_write(tmp_path / "cat.txt", "a\nb\nc\n")) == names
    with pytest.raises(AnnotationError, match="x.json: neither"):
        read_class_list(_write(tmp_path / "x.json", "[1, 2]"))


def test_shard_keys_have_no_dot_or_slash_and_stay_unique_when_cut():
    assert make_video_id("abseiling/--07WQ2iBlw_000001_000011") == "abseiling~--07WQ2iBlw_000001_000011"
    assert make_video_id(" Dr.No  clip/1 ") == "Dr_No_clip~1"
    long_a, long_b = "x" * 120 + "a", "x" * 120 + "b"
    assert len(make_video_id(long_a).encode()) <= 93 and make_video_id(long_a) != make_video_id(long_b)
    assert make_video_id("12345") == "12345"


def _jpeg(size: tuple[int, int], colour: int = 90, quality: int = 80) -> bytes:
    """A JPEG image of one colour."""
    encoded = io.BytesIO()
    Image.new("RGB", size, (colour, 20, 200)).save(encoded, "JPEG", quality=quality)
    return encoded.getvalue()


def test_frame_folders_copy_resize_and_refuse_what_they_cannot_store(tmp_path):
    folder = tmp_path / "v"
    for number in (1, 2, 3):
        _write(folder / f"{number:05d}.jpg", _jpeg((60, 40), 30 * number))
    video = read_frame_folder(folder, "{:05d}.jpg", None, 0, 90)
    assert video.error is None and (video.width, video.height) == (60, 40)
    assert video.frames == [(folder / f"{number:05d}.jpg").read_bytes() for number in (1, 2, 3)]
    resized = read_frame_folder(folder, "{:05d}.jpg", None, 20, 90)
    assert (resized.width, resized.height) == (30, 20) and len(resized.frames) == 3
    assert Image.open(io.BytesIO(resized.frames[0])).size == (30, 20)
    assert read_frame_folder(folder, "{:05d}.jpg", 2, 0, 90).frames == video.frames[:2]
    assert read_frame_folder(folder, "{:05d}.jpg", 4, 0, 90).error == "missing frame file: 00004.jpg"
    png = tmp_path / "png"
    Image.new("RGB", (8, 6), (1, 2, 3)).save(_write(png / "img_00001.png", b""), "PNG")
    stored = read_frame_folder(png, "img_{:05d}.png", None, 0, 90)
    assert stored.error is None and stored.frames[0][:2] == b"\xff\xd8"  # re-encoded as JPEG
    gap = tmp_path / "gap"
    for number in (1, 3):
        _write(gap / f"{number:05d}.jpg", _jpeg((8, 8)))
    assert read_frame_folder(gap, "{:05d}.jpg", None, 0, 90).error.startswith("missing frame file: 00002.jpg")
    sizes = tmp_path / "sizes"
    _write(sizes / "00001.jpg", _jpeg((8, 8)))
    _write(sizes / "00002.jpg", _jpeg((10, 8)))
    assert read_frame_folder(sizes, "{:05d}.jpg", None, 0, 90).error == (
        "frame sizes differ: 00001.jpg is 8x8, 00002.jpg is 10x8")
    broken = tmp_path / "broken"
    _write(broken / "00001.jpg", _jpeg((16, 16))[:40])
    assert read_frame_folder(broken, "{:05d}.jpg", None, 0, 90).error.startswith("corrupt frame file: 00001.jpg")
    assert read_frame_folder(tmp_path / "none", "{:05d}.jpg", None, 0, 90).error == "missing frame folder"
    _write(tmp_path / "empty" / "notes.txt", "x")
    assert read_frame_folder(tmp_path / "empty", "{:05d}.jpg", None, 0, 90).error.startswith("no frame files")


def test_predict_reads_names_from_a_manifest_or_a_category_file(tmp_path, capsys):
    import predict
    from engine.checkpoint import save_atomic
    from model import build_model
    from preprocess.ffmpeg_tools import resolve_ffmpeg

    video = tmp_path / "clip.mp4"
    subprocess.run([resolve_ffmpeg().path, "-v", "error", "-f", "lavfi", "-i", "testsrc=s=48x32:r=10:d=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)], check=True)  # fmt: skip
    network = build_model("tiny", num_classes=3)
    save_atomic({"model": network.state_dict(), "config": network.config}, tmp_path / "tsm.pt")
    names = ["abseiling", "air drumming", "archery"]
    lists = {"manifest": _write(tmp_path / "train.manifest.json", json.dumps({"class_names": names})),
             "category file": _write(tmp_path / "category.txt", "\n".join(names) + "\n")}
    for class_list in lists.values():
        report = predict.run(predict.parse_args([
            "--checkpoint", str(tmp_path / "tsm.pt"), "--video", str(video), "--frames", "4", "--labels",
            str(class_list), "--device", "cpu", "--decode", "cpu", "--short-side", "32", "--crop-size", "32",
            "--repeats", "1", "--warmup", "0"]))
        top = report["videos"][0]["results"]["4"]["top5"]
        assert sorted(item["label"] for item in top) == names
    with pytest.raises(SystemExit, match="2 classes but"):
        predict.run(predict.parse_args(["--checkpoint", str(tmp_path / "tsm.pt"), "--video", str(video), "--labels",
                                        str(_write(tmp_path / "two.txt", "a\nb\n")), "--device", "cpu"]))


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_passes_the_dataset_to_synthetic_and_shards():
    repo = Path(__file__).resolve().parents[1]

    def planned(*variables: str) -> str:
        completed = subprocess.run(["make", "--no-print-directory", "-n", *variables, "VENV=", "PYTHON=python"],
                                   cwd=repo, capture_output=True, text=True, check=True)
        return " ".join(completed.stdout.split())

    assert "-m preprocess.make_shards --dataset ssv2 --data-root d --out s" in planned("shards", "DATA_ROOT=d",
                                                                                       "SHARDS=s")
    assert "--dataset k400 --data-root d" in planned("shards", "DATASET=k400", "DATA_ROOT=d")
    assert "-m preprocess.synthetic --dataset hmdb51 --root d" in planned("synthetic", "DATASET=hmdb51", "DATA_ROOT=d")
