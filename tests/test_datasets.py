"""Every dataset layout through `make shards`, `make verify-shards`, train.py and evaluate.py, end to end.

Each layout is written by preprocess.synthetic_layouts (real JPEG folders, H.264 mp4, MPEG-4 avi, CSV, split
and list files: 4 classes x 3 clips of 40x32, 6-10 frames), then a few unusable entries are added by hand (a class
not in the class list, a duplicate id, a listed video with no file). The shards must hold every usable video in
its class with its exact frame count, list every other one in "skipped" with its reason, record the dataset,
its flip rule and class names, pass verify-shards, and be left as they are by a rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import evaluate
import train
from preprocess import make_shards, verify_shards
from preprocess.datasets.base import make_video_id
from preprocess.synthetic_layouts import generate_layout
from shard_format import manifest_path, read_manifest, read_sample_meta, slice_frames
from test_train import TINY_ARGS

CLASSES = 4
WIDTH, HEIGHT = 40, 32
FLIP = {"ssv1": False, "k400": True, "hmdb51": True, "tsm-list": False}
SPLITS_OF = {"ssv1": ("train", "validation", "test"), "k400": ("train", "validation", "test"),
             "hmdb51": ("train", "validation"), "tsm-list": ("train", "validation", "test")}
STATUS_REASON = {"missing": "missing video file", "corrupt": "corrupt or truncated video",
                 "missing_frame": "missing frame file"}
UNKNOWN_CLASS = "Juggling something"
SHARD_FLAGS = ["--train-shards", "2", "--eval-shards", "2", "--workers", "1", "--batch-videos", "3",
               "--max-skip-fraction", "1", "--no-progress", "--slice-index", "0", "--slice-count", "1"]


def _append(path: Path, *lines: str) -> None:
    """Add lines at the end of a text file."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def _add_unusable_entries(dataset: str, root: Path, truth: dict) -> dict[str, str]:
    """Add a class not in the class list, a duplicate id and (frame folders) a folder that does not exist.

    Returns {id: expected reason prefix} of the added entries (the duplicate's id is the first copy's).
    """
    if dataset == "ssv1":
        train = (root / "something-something-v1-train.csv").read_text().splitlines()
        first = train[0].split(";")[0]
        _append(root / "something-something-v1-train.csv", f"99999;{UNKNOWN_CLASS}", f"88888;{train[0].split(';')[1]}")
        _append(root / "something-something-v1-validation.csv", train[0])
        return {"99999": "unknown class", "88888": "missing frame folder", first: "duplicate id"}
    if dataset == "k400":
        rows = (root / "annotations" / "train.csv").read_text().splitlines()[1:]
        row = next(row for row in rows if truth[_k400_id(row)]["status"] == "ok")
        _append(root / "annotations" / "val.csv", "juggling,zzzzzzzzzzz,1,11,val")
        _append(root / "annotations" / "test.csv", row.replace(",train", ",test"))
        return {"zzzzzzzzzzz_000001_000011": "unknown class", _k400_id(row): "duplicate id"}
    if dataset == "hmdb51":
        files = sorted((root / "testTrainMulti_7030_splits").glob("*_test_split1.txt"))
        video = next(line.split()[0] for line in files[0].read_text().splitlines()
                     if line.split()[1] == "1" and truth[make_video_id(Path(line.split()[0]).stem)]["status"] == "ok")
        _append(files[1], f"{video} 1")
        return {make_video_id(Path(video).stem): "duplicate id"}
    train = (root / "train_list.txt").read_text().splitlines()
    folder = train[0].rsplit(maxsplit=2)[0]
    _append(root / "train_list.txt", f"{folder}_other 5 {CLASSES + 3}")
    _append(root / "val_list.txt", train[0])
    return {make_video_id(f"{folder}_other"): "unknown class", make_video_id(folder): "duplicate id"}


def _k400_id(row: str) -> str:
    """The clip id of a Kinetics CSV row (label,youtube_id,time_start,time_end,split)."""
    fields = row.split(",")
    return f"{fields[1]}_{int(fields[2]):06d}_{int(fields[3]):06d}"


def _tsm_flags(root: Path) -> list[str]:
    """The list, category and flip flags of the synthetic TSM layout."""
    return ["--train-list", str(root / "train_list.txt"), "--val-list", str(root / "val_list.txt"),
            "--test-list", str(root / "test_list.txt"), "--categories", str(root / "categories.txt"), "--no-flip"]


def _shard_command(dataset: str, root: Path, out: Path, *extra: str) -> list[str]:
    """make_shards' command line for one layout (native size)."""
    flags = _tsm_flags(root) if dataset == "tsm-list" else []
    return ["--dataset", dataset, "--data-root", str(root), "--out", str(out), "--short-side", "0", *SHARD_FLAGS,
            *flags, *extra]


@pytest.fixture(scope="module", params=sorted(FLIP))
def built(request, tmp_path_factory) -> dict:
    """One layout, generated, altered and sharded: {"dataset", "root", "out", "truth", "added"}."""
    dataset = request.param
    root = tmp_path_factory.mktemp(f"{dataset}_data")
    summary = generate_layout(dataset, root, 3, (6, 10), WIDTH, HEIGHT, split_fractions=(0.34, 0.33, 0.33),
                              seed=3, classes=CLASSES, force=True, workers=2)
    added = _add_unusable_entries(dataset, root, summary["videos"])
    out = tmp_path_factory.mktemp(f"{dataset}_shards")
    assert make_shards.main(_shard_command(dataset, root, out)) == make_shards.EXIT_OK
    return {"dataset": dataset, "root": root, "out": out, "truth": summary["videos"], "added": added}


def _samples(out: Path, split: str) -> dict[str, tuple[dict, bytes]]:
    """Every sample of a split: {id: (metadata, packed frames)}."""
    samples = {}
    for shard in read_manifest(manifest_path(out, split))["shards"]:
        for key, members in verify_shards.iter_samples(out / shard["name"]):
            meta = read_sample_meta({"json": members[".json"], "frames": members[".frames"], "__key__": key})
            samples[key] = (meta, members[".frames"])
    return samples


def _expected_split(dataset: str, record: dict) -> str | None:
    """The shard split a generated video belongs to (HMDB51: its split-1 part; None: not used)."""
    return record["split_by_id"]["1"] if dataset == "hmdb51" else record["split"]


def _assert_frames_copied(dataset: str, out: Path, root: Path) -> None:
    """The first train sample of a frame-folder layout holds its frame files' bytes."""
    meta, packed = next(iter(_samples(out, "train").values()))
    if dataset == "ssv1":
        folder = root / "20bn-something-something-v1" / meta["id"]
    else:
        listed = [line.rsplit(maxsplit=2)[0] for line in (root / "train_list.txt").read_text().splitlines()]
        folder = root / next(name for name in listed if make_video_id(name) == meta["id"])
    pattern = "{:05d}.jpg" if dataset == "ssv1" else "img_{:05d}.jpg"
    stored = slice_frames(packed, meta, range(meta["num_frames"]))
    assert stored == [(folder / pattern.format(number)).read_bytes() for number in range(1, meta["num_frames"] + 1)]


def test_every_video_is_in_its_class_with_its_frames_or_skipped_with_its_reason(built):
    dataset, out, truth = built["dataset"], built["out"], built["truth"]
    manifests = {split: read_manifest(manifest_path(out, split)) for split in SPLITS_OF[dataset]}
    names = manifests["train"]["class_names"]
    samples = {split: _samples(out, split) for split in manifests}
    skipped: dict[str, list[str]] = {}
    for manifest in manifests.values():
        for entry in manifest["skipped"]:
            skipped.setdefault(entry["id"], []).append(entry["reason"])
    for video_id, record in truth.items():
        split = _expected_split(dataset, record)
        if split is None:
            assert video_id not in skipped and all(video_id not in found for found in samples.values())
        elif record["status"] in STATUS_REASON:
            reasons = skipped.get(video_id, [])
            assert reasons and all(reason.startswith(STATUS_REASON[record["status"]]) for reason in reasons), video_id
        else:
            meta, _ = samples[split][video_id]
            assert meta["num_frames"] == record["num_frames"]
            if split == "test" and dataset in ("ssv1", "tsm-list"):
                assert meta["label"] == -1  # their test files carry no label
            else:
                assert names[meta["label"]] == record["class"] == meta["template"]
            if dataset == "k400":
                assert (meta["width"], meta["height"]) == (record["width"], record["height"])
    for video_id, reason in built["added"].items():
        assert [found for found in skipped[video_id] if found.startswith(reason)], (video_id, skipped.get(video_id))
    if dataset in ("ssv1", "tsm-list"):
        _assert_frames_copied(dataset, out, built["root"])
    written = sum(len(found) for found in samples.values())
    assert written == sum(1 for record in truth.values()
                          if _expected_split(dataset, record) and record["status"] not in STATUS_REASON)


def test_manifests_record_the_dataset_flip_rule_class_names_and_settings(built):
    dataset, out = built["dataset"], built["out"]
    manifests = [read_manifest(manifest_path(out, split)) for split in SPLITS_OF[dataset]]
    names = manifests[0]["class_names"]
    assert len(names) == CLASSES and all(manifest["class_names"] == names for manifest in manifests)
    if dataset in ("ssv1", "k400", "hmdb51"):
        assert names == sorted(names)  # SSv1 as TSM's category.txt, Kinetics and HMDB51 sorted
    else:
        assert names == (built["root"] / "categories.txt").read_text().splitlines()
    for manifest in manifests:
        assert manifest["dataset"] == dataset and manifest["flip"] is FLIP[dataset]
        settings = manifest["settings"]
        assert settings["num_classes"] == CLASSES and settings["short_side"] == 0
        if dataset in ("ssv1", "tsm-list"):
            assert settings["frame_pattern"] in ("{:05d}.jpg", "img_{:05d}.jpg") and "ffmpeg_path" not in settings
        else:
            assert settings["ffmpeg_version"] and "frame_pattern" not in settings
    if dataset == "hmdb51":
        assert manifests[0]["settings"]["split_id"] == 1


def test_verify_passes_and_a_rerun_is_a_no_op(built, capsys):
    out = built["out"]
    assert verify_shards.main(["--shards", str(out), "--full-decode"]) == verify_shards.EXIT_OK
    files = sorted(path for path in out.iterdir() if path.suffix in (".tar", ".json"))
    before = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in files if path.suffix == ".tar"}
    sidecars = {path.name: path.stat().st_mtime_ns for path in out.glob("*.done.json")}
    assert make_shards.main(_shard_command(built["dataset"], built["root"], out)) == make_shards.EXIT_OK
    assert {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.glob("*.tar")} == before
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.done.json")} == sidecars


def test_one_epoch_trains_and_evaluates_with_the_manifest_classes_and_flip_rule(built, tmp_path):
    dataset, out = built["dataset"], built["out"]
    run = tmp_path / "run"
    status = train.main(["--mode", "vanilla", "--frames", "4", "--shards", str(out), "--output", str(run), "--epochs",
                         "1", "--batch-size", "2", "--lr", "0.01", *TINY_ARGS])
    assert status == 0
    settings = json.loads((run / train.SETTINGS_JSON).read_text())
    assert settings["flip"] is FLIP[dataset] and settings["dataset"] == dataset
    checkpoint = torch.load(run / train.LAST_CHECKPOINT, weights_only=True)
    names = read_manifest(manifest_path(out, "train"))["class_names"]
    assert checkpoint["config"]["num_classes"] == CLASSES and checkpoint["inference"]["class_names"] == names
    assert checkpoint["inference"]["dataset"] == dataset
    report = evaluate.run(evaluate.build_parser().parse_args([
        "--checkpoints", str(run / train.LAST_CHECKPOINT), "--frames", "4", "--shards", str(out), "--output",
        str(tmp_path / "eval"), "--workers", "0", "--no-latency", "--threads", "1"]))
    validation = read_manifest(manifest_path(out, "validation"))["num_samples"]
    assert report["models"]["run"]["n"] == validation > 0


def test_official_preset_takes_the_dataset_override_and_flags_win(built, tmp_path):
    out, dataset = built["out"], built["dataset"]
    common = ["--mode", "vanilla", "--frames", "4", "--shards", str(out), "--output", str(tmp_path)]
    args = train.resolve_args([*common, "--preset", "official"])
    assert args.weight_decay == (1e-4 if dataset == "k400" else 5e-4) and args.dataset == dataset
    assert train.resolve_args([*common, "--preset", "official", "--weight-decay", "3e-4"]).weight_decay == 3e-4
    assert train.resolve_args(common).weight_decay == 5e-4  # the override belongs to the official preset only
    assert train.resolve_args([*common, "--flip"]).flip is True
    assert train.resolve_args([*common, "--no-flip"]).flip is False
    assert train.resolve_args(common).flip is FLIP[dataset]


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory) -> Path:
    """A Kinetics-400 layout (12 clips at 24, 25 and 30 fps)."""
    root = tmp_path_factory.mktemp("k400_fps")
    generate_layout("k400", root, 3, (8, 12), WIDTH, HEIGHT, split_fractions=(1.0, 0.0, 0.0), seed=5, classes=4,
                    force=True, workers=2)
    return root


def test_fps_resamples_video_files_and_is_recorded(kinetics, tmp_path):
    truth = json.loads((kinetics / "generator.json").read_text())["videos"]
    out = tmp_path / "shards"
    assert make_shards.main(_shard_command("k400", kinetics, out, "--splits", "train", "--fps", "12")) == 0
    settings = read_manifest(manifest_path(out, "train"))["settings"]
    assert settings["fps"] == 12 and "resampled to 12 fps" in settings["frames"]
    samples = _samples(out, "train")
    assert samples
    for video_id, (meta, _) in samples.items():
        source = truth[video_id]
        assert abs(meta["num_frames"] - source["num_frames"] * 12 / source["fps"]) <= 1
        assert meta["num_frames"] < source["num_frames"]


def test_an_empty_split_gives_an_empty_manifest(kinetics, tmp_path, capsys):
    out = tmp_path / "shards"
    status = make_shards.main(_shard_command("k400", kinetics, out, "--splits", "validation", "test"))
    assert status == make_shards.EXIT_OK
    for split in ("validation", "test"):
        manifest = read_manifest(manifest_path(out, split))
        assert manifest["num_samples"] == 0 and manifest["shards"] == [] and manifest["dataset"] == "k400"
    assert "validation: empty split" in capsys.readouterr().out
    assert verify_shards.main(["--shards", str(out)]) == verify_shards.EXIT_OK


def test_hmdb51_split_id_chooses_the_official_split(tmp_path):
    from preprocess.datasets import hmdb51

    root = tmp_path / "hmdb"
    summary = generate_layout("hmdb51", root, 4, 6, 16, 16, seed=1, classes=2, force=True, workers=2)
    for split_id in (1, 2, 3):
        index = hmdb51.read_dataset(root, ("train", "validation"), make_shards.parse_args(
            ["--dataset", "hmdb51", "--data-root", str(root), "--out", str(tmp_path), "--split-id", str(split_id)]))
        found = {entry.video_id: split for split, entries in index.entries.items() for entry in entries}
        expected = {video_id: record["split_by_id"][str(split_id)] for video_id, record in summary["videos"].items()
                    if record["split_by_id"][str(split_id)]}
        assert found == expected and index.settings == {"split_id": split_id}
