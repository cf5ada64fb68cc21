"""End-to-end tests of `make shards` / `make verify-shards` on small synthetic SSv2-format data with bad inputs."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from preprocess import make_shards, verify_shards
from preprocess.datasets.ssv2 import AnnotationError, load_annotations, template_key, video_path
from preprocess.ffmpeg_tools import resolve_ffmpeg
from shard_format import (
    ManifestError,
    manifest_path,
    read_manifest,
    read_sidecar,
    shard_name,
    sidecar_path,
)
from preprocess.synthetic import generate_dataset
from preprocess.video_decode import decode_videos

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 40, 32
NUM_CLASSES = 8
VIDEOS_PER_CLASS = 4
TRAIN_SHARDS, EVAL_SHARDS = 5, 3
BAD_TRAIN = {
    "900001": "missing video file",
    "900002": "zero-byte video file",
    "900003": "corrupt or truncated video",
    "900004": "corrupt or truncated video",
    "900005": "no decodable frame",
    "900006": "template not in labels.json",
}
UNKNOWN_TEMPLATE = "Juggling [something] while riding a unicycle"
POLL_S = 0.05
KILL_WAIT_LIMIT_S = 120


def _shard_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    """The common command line of the test runs."""
    return [
        "--data-root", str(data_root), "--out", str(out), "--short-side", "0",
        "--train-shards", str(TRAIN_SHARDS), "--eval-shards", str(EVAL_SHARDS),
        "--batch-videos", "4", "--max-skip-fraction", "0.5", "--no-progress", "--slice-index", "0",
        "--slice-count", "1", *extra,
    ]  # fmt: skip


def _add_bad_inputs(root: Path) -> dict[str, str]:
    """Add bad videos and entries to a generated dataset; return {id: expected reason category}."""
    ffmpeg = resolve_ffmpeg().path
    labels_dir = root / "labels"
    train = json.loads((labels_dir / "train.json").read_text())
    validation = json.loads((labels_dir / "validation.json").read_text())
    good = video_path(root, train[0]["id"]).read_bytes()
    template = train[0]["template"]
    video_path(root, "900002").write_bytes(b"")
    video_path(root, "900003").write_bytes(good[: len(good) * 4 // 10])
    middle = bytearray(good)
    middle[len(good) // 2 : len(good) // 2 + 400] = b"garbage!" * 50
    video_path(root, "900004").write_bytes(bytes(middle))
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "libvorbis", str(video_path(root, "900005"))],
        check=True,
    )
    video_path(root, "900006").write_bytes(good)
    for video_id in BAD_TRAIN:
        entry_template = UNKNOWN_TEMPLATE if video_id == "900006" else template
        train.append({"id": video_id, "label": "x", "template": entry_template, "placeholders": ["x"]})
    duplicate = dict(train[1])
    validation.append(duplicate)
    (labels_dir / "train.json").write_text(json.dumps(train))
    (labels_dir / "validation.json").write_text(json.dumps(validation))
    return {**BAD_TRAIN, duplicate["id"]: "duplicate id"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A small synthetic dataset (40x32, 10-20 frames) plus every kind of bad video and entry."""
    root = tmp_path_factory.mktemp("ssv2")
    generate_dataset(
        root, VIDEOS_PER_CLASS, num_frames=(10, 20), width=WIDTH, height=HEIGHT,
        split_fractions=(0.5, 0.25, 0.25), classes=NUM_CLASSES, workers=2,
    )  # fmt: skip
    return root, _add_bad_inputs(root)


@pytest.fixture(scope="module")
def built(dataset, tmp_path_factory) -> Path:
    """Shards of the dataset written with two workers."""
    root, _ = dataset
    out = tmp_path_factory.mktemp("shards")
    assert make_shards.main(_shard_args(root, out, "--workers", "2")) == 0
    return out


def _tar_bytes(folder: Path) -> dict[str, bytes]:
    """Every shard's bytes by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.tar"))}


def _samples(folder: Path, split: str) -> dict[str, tuple[dict, bytes]]:
    """{id: (json metadata, packed frames)} of every sample of a split."""
    samples = {}
    for listed in read_manifest(manifest_path(folder, split))["shards"]:
        for key, members in verify_shards.iter_samples(folder / listed["name"]):
            samples[key] = (json.loads(members[".json"]), members[".frames"])
    return samples


def _source_frame_count(path: Path) -> int:
    """Frames the source decodes to, counted by ffmpeg on its own."""
    completed = subprocess.run(
        [resolve_ffmpeg().path, "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
         "-f", "framecrc", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sum(1 for line in completed.stdout.splitlines() if line.startswith("0,"))


def test_manifests_count_every_good_video_and_list_the_bad_ones(dataset, built):
    root, bad = dataset
    annotations = load_annotations(root)
    for split, entries in annotations.items():
        manifest = read_manifest(manifest_path(built, split))
        bad_videos = BAD_TRAIN if split == "train" else {}
        expected_good = [e.video_id for e in entries if e.skip_reason is None and e.video_id not in bad_videos]
        assert manifest["num_samples"] == len(expected_good) == len(_samples(built, split))
        assert len(manifest["shards"]) == min(TRAIN_SHARDS if split == "train" else EVAL_SHARDS, len(expected_good))
        assert manifest["num_frames"] == sum(shard["num_frames"] for shard in manifest["shards"])
        assert all((built / shard["name"]).stat().st_size == shard["bytes"] for shard in manifest["shards"])
        assert manifest["settings"]["jpeg_quality"] == 90 and manifest["settings"]["ffmpeg_path"]
        labels = json.loads((root / "labels" / "labels.json").read_text())
        assert manifest["settings"]["num_classes"] == len(labels)
        assert manifest["class_names"] == sorted(labels, key=lambda name: int(labels[name]))  # by class index
    skipped = {}
    for split in annotations:
        skipped.update({e["id"]: e["reason"] for e in read_manifest(manifest_path(built, split))["skipped"]})
    assert set(skipped) == set(bad)
    for video_id, category in bad.items():
        assert skipped[video_id].startswith(category), (video_id, skipped[video_id])


def test_every_sample_matches_its_source_and_annotation(dataset, built):
    root, _ = dataset
    labels = json.loads((root / "labels" / "labels.json").read_text())
    for split in ("train", "validation", "test"):
        annotation = {entry["id"]: entry for entry in json.loads((root / "labels" / f"{split}.json").read_text())}
        for video_id, (meta, packed) in _samples(built, split).items():
            assert meta["num_frames"] == _source_frame_count(video_path(root, video_id))
            expected_label = -1 if split == "test" else int(labels[template_key(annotation[video_id]["template"])])
            assert meta["label"] == expected_label
            assert (meta["width"], meta["height"]) == (WIDTH, HEIGHT)
            first = packed[meta["offsets"][0] : meta["offsets"][0] + meta["lengths"][0]]
            assert Image.open(io.BytesIO(first)).size == (WIDTH, HEIGHT)


def test_shards_mix_classes_in_a_seeded_order(built):
    first_shard = read_manifest(manifest_path(built, "train"))["shards"][0]["name"]
    labels = [json.loads(members[".json"])["label"] for _, members in verify_shards.iter_samples(built / first_shard)]
    assert len(set(labels)) > 1
    order = sorted(["1", "2", "3", "4", "5"], key=lambda video_id: make_shards.shuffle_key(0, "train", video_id))
    other = sorted(["1", "2", "3", "4", "5"], key=lambda video_id: make_shards.shuffle_key(1, "train", video_id))
    assert order != other


def test_short_side_resizes_keeping_the_aspect_ratio(dataset, tmp_path):
    root, _ = dataset
    args = _shard_args(root, tmp_path, "--splits", "validation", "--workers", "1")
    args[args.index("--short-side") + 1] = "64"
    assert make_shards.main(args) == 0
    meta, packed = next(iter(_samples(tmp_path, "validation").values()))
    assert (meta["width"], meta["height"]) == (80, 64)
    assert Image.open(io.BytesIO(packed[: meta["lengths"][0]])).size == (80, 64)


def test_rerun_with_other_worker_count_is_byte_identical(dataset, built, tmp_path):
    root, _ = dataset
    assert make_shards.main(_shard_args(root, tmp_path, "--workers", "1")) == 0
    assert _tar_bytes(tmp_path) == _tar_bytes(built)
    for split in ("train", "validation", "test"):
        assert manifest_path(tmp_path, split).read_bytes() == manifest_path(built, split).read_bytes()


def test_resume_redoes_only_missing_or_half_written_shards(dataset, built, tmp_path, caplog):
    root, _ = dataset
    out = tmp_path / "shards"
    shutil.copytree(built, out)
    for path in out.glob("*.manifest.json"):
        path.unlink()
    sidecar_path(out / shard_name("train", 0)).unlink()
    (out / shard_name("train", 1)).write_bytes((built / shard_name("train", 1)).read_bytes()[:5000])
    (out / shard_name("validation", 0)).unlink()
    (out / f".{shard_name('validation', 0)}.tmp-12345").write_bytes(b"half")
    untouched = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p.name not in {
        shard_name("train", 0), shard_name("train", 1)}}
    time.sleep(0.01)
    assert make_shards.main(_shard_args(root, out, "--finalize-only")) == make_shards.EXIT_MISSING_SHARDS
    refusal = caplog.text
    for name in (shard_name("train", 0), shard_name("train", 1), shard_name("validation", 0)):
        assert name in refusal
    assert not manifest_path(out, "train").exists()
    assert make_shards.main(_shard_args(root, out, "--workers", "1")) == 0
    assert _tar_bytes(out) == _tar_bytes(built)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p.name in untouched} == untouched
    assert not list(out.glob(".*.tmp-*"))
    assert verify_shards.main(["--shards", str(out)]) == 0


def _hanging_ffmpeg(folder: Path, real: str) -> Path:
    """An ffmpeg wrapper that counts its calls and hangs once $HANG_AFTER calls have been made."""
    wrapper = folder / "ffmpeg-wrapper.sh"
    counter = folder / "calls"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *-version*) exec "{real}" "$@";; esac\n'
        f'n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "{counter}"\n'
        'if [ -n "$HANG_AFTER" ] && [ "$n" -gt "$HANG_AFTER" ]; then sleep 600; fi\n'
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.slow
def test_killed_run_resumes_without_counting_a_shard_twice(dataset, built, tmp_path):
    root, _ = dataset
    counter = tmp_path / "calls"
    wrapper = _hanging_ffmpeg(tmp_path, resolve_ffmpeg().path)
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "preprocess.make_shards", *_shard_args(root, out, "--workers", "1")]
    command[command.index("--batch-videos") + 1] = "2"
    environment = dict(os.environ, FFMPEG_BINARY=str(wrapper), HANG_AFTER="6")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + KILL_WAIT_LIMIT_S
    while (not counter.exists() or int(counter.read_text() or 0) <= 6) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before the wrapper hung"
        time.sleep(POLL_S)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    complete = [p for p in out.glob("*.tar") if read_sidecar(p) is not None]
    assert complete and not list(out.glob("*.manifest.json"))
    assert len(complete) < TRAIN_SHARDS
    environment.pop("HANG_AFTER")
    assert subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True).returncode == 0
    assert _tar_bytes(out) == _tar_bytes(built)
    manifest = read_manifest(manifest_path(out, "train"))
    assert manifest["num_samples"] == read_manifest(manifest_path(built, "train"))["num_samples"]
    assert manifest["settings"]["ffmpeg_path"] == str(wrapper)


def test_settings_hash_guard_redoes_shards_and_finalize_refuses_other_settings(dataset, built, tmp_path):
    root, _ = dataset
    out = tmp_path / "shards"
    shutil.copytree(built, out)
    assert make_shards.main(_shard_args(root, out, "--quality", "70", "--finalize-only")) == 3
    assert make_shards.main(_shard_args(root, out, "--quality", "70", "--workers", "1", "--splits", "test")) == 0
    manifest = read_manifest(manifest_path(out, "test"))
    assert manifest["settings"]["jpeg_quality"] == 70
    for shard in manifest["shards"]:
        assert (out / shard["name"]).read_bytes() != (built / shard["name"]).read_bytes()
        assert read_sidecar(out / shard["name"])["settings_hash"] == manifest["settings"]["hash"]
    assert _tar_bytes(out)[shard_name("train", 0)] == _tar_bytes(built)[shard_name("train", 0)]


def test_slices_write_disjoint_shards_and_finalize_assembles_them(dataset, built, tmp_path):
    root, _ = dataset
    assert make_shards.main(_shard_args(root, tmp_path, "--slice-index", "0", "--slice-count", "2")) == 0
    assert not list(tmp_path.glob("*.manifest.json"))
    assert make_shards.main(_shard_args(root, tmp_path, "--finalize-only")) == make_shards.EXIT_MISSING_SHARDS
    assert make_shards.main(_shard_args(root, tmp_path, "--slice-index", "1", "--slice-count", "2")) == 0
    assert make_shards.main(_shard_args(root, tmp_path, "--finalize-only")) == 0
    assert _tar_bytes(tmp_path) == _tar_bytes(built)
    assert manifest_path(tmp_path, "train").read_bytes() == manifest_path(built, "train").read_bytes()


def test_slurm_environment_chooses_the_slice(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    args = make_shards.parse_args(["--data-root", "d", "--out", "o"])
    assert (args.slice_index, args.slice_count) == (2, 4)
    assert make_shards.shard_count(256, 10) == 10 and make_shards.shard_count(256, 0) == 0


def test_skip_fraction_and_strict_set_the_exit_status(dataset, built, tmp_path):
    root, _ = dataset
    out = tmp_path / "shards"
    shutil.copytree(built, out)
    args = _shard_args(root, out, "--finalize-only")
    assert make_shards.main(args) == 0
    assert make_shards.main(args + ["--strict"]) == make_shards.EXIT_TOO_MANY_SKIPPED
    args[args.index("--max-skip-fraction") + 1] = "0.01"
    assert make_shards.main(args) == make_shards.EXIT_TOO_MANY_SKIPPED


def test_batch_with_a_corrupt_video_keeps_its_neighbours(dataset):
    root, _ = dataset
    train = json.loads((root / "labels" / "train.json").read_text())
    paths = [video_path(root, train[0]["id"]), video_path(root, "900004"), video_path(root, train[2]["id"])]
    together = decode_videos(resolve_ffmpeg().path, paths, 0, 90, batch_size=3)
    alone = decode_videos(resolve_ffmpeg().path, paths, 0, 90, batch_size=1)
    assert [video.frames for video in together] == [video.frames for video in alone]
    assert together[0].frames and together[2].frames and together[1].error and not together[1].frames


def _copy_labels(root: Path, target: Path) -> Path:
    """A dataset root whose labels/ is a copy and whose videos are the original's (a symlink)."""
    shutil.copytree(root / "labels", target / "labels")
    (target / "data").symlink_to(root / "data")
    return target


def test_malformed_json_stops_before_any_shard(dataset, tmp_path, caplog):
    root, _ = dataset
    copy = _copy_labels(root, tmp_path / "root")
    train_file = copy / "labels" / "train.json"
    train_file.write_text(train_file.read_text()[:-20])
    out = tmp_path / "shards"
    assert make_shards.main(_shard_args(copy, out)) == make_shards.EXIT_BAD_INPUT
    assert str(train_file) in caplog.text and "not valid JSON" in caplog.text
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize(
    ("file_name", "mutate", "expected"),
    [
        ("train.json", lambda entries: entries.__setitem__(3, {"template": "x"}), "entry 3"),
        ("validation.json", lambda entries: entries.__setitem__(1, {"id": "7"}), "entry 1 (id 7)"),
        ("test.json", lambda entries: entries.__setitem__(0, ["1"]), "entry 0"),
        ("labels.json", lambda labels: labels.__setitem__("Moving something up", "two"), "Moving something up"),
        ("train.json", lambda entries: entries.__setitem__(0, {"id": "1.5", "template": "x"}), "'1.5'"),
    ],
)
def test_malformed_entry_is_named(dataset, tmp_path, file_name, mutate, expected):
    root, _ = dataset
    copy = _copy_labels(root, tmp_path / "root")
    path = copy / "labels" / file_name
    payload = json.loads(path.read_text())
    mutate(payload)
    path.write_text(json.dumps(payload))
    with pytest.raises(AnnotationError) as raised:
        load_annotations(copy)
    assert str(path) in str(raised.value) and expected in str(raised.value)


def test_verify_passes_then_names_each_mismatch(built, tmp_path, capsys):
    assert verify_shards.main(["--shards", str(built), "--full-decode"]) == 0
    out = tmp_path / "shards"
    shutil.copytree(built, out)
    name = shard_name("train", 0)
    with tarfile.open(out / name) as archive:
        members = [(member, archive.extractfile(member).read()) for member in archive.getmembers()]
    frames_index = next(i for i, (member, _) in enumerate(members) if member.name.endswith(".frames"))
    member, payload = members[frames_index]
    members[frames_index] = (member, payload[:-1] + b"\x00")
    with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as archive:
        for member, payload in members:
            archive.addfile(member, io.BytesIO(payload))
    (out / shard_name("validation", 1)).unlink()
    manifest = json.loads(manifest_path(out, "test").read_text())
    manifest["num_samples"] += 1
    manifest_path(out, "test").write_text(json.dumps(manifest))
    assert verify_shards.main(["--shards", str(out)]) == verify_shards.EXIT_MISMATCH
    report = capsys.readouterr().out
    assert "SOI/EOI" in report and name in report
    assert f"{shard_name('validation', 1)}: listed in the manifest but missing" in report
    assert "test.manifest.json: num_samples" in report


def test_verify_full_decode_catches_a_wrong_size(built, tmp_path, capsys):
    out = tmp_path / "shards"
    shutil.copytree(built, out)
    name = shard_name("validation", 0)
    with tarfile.open(out / name) as archive:
        members = [(member, archive.extractfile(member).read()) for member in archive.getmembers()]
    meta = json.loads(members[0][1])
    meta["width"] += 1
    payload = json.dumps(meta).encode()
    members[0][0].size = len(payload)
    members[0] = (members[0][0], payload)
    with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as archive:
        for member, data in members:
            archive.addfile(member, io.BytesIO(data))
    assert verify_shards.main(["--shards", str(out)]) == verify_shards.EXIT_OK  # same length: only a decode sees it
    capsys.readouterr()
    assert verify_shards.main(["--shards", str(out), "--full-decode"]) == verify_shards.EXIT_MISMATCH
    report = capsys.readouterr().out
    assert f"decodes to {WIDTH}x{HEIGHT}, json says {WIDTH + 1}x{HEIGHT}" in report


def test_finalize_refuses_a_missing_shard(dataset, built, tmp_path):
    root, _ = dataset
    out = tmp_path / "shards"
    shutil.copytree(built, out)
    (out / shard_name("test", 2)).unlink()
    plans = make_shards.build_plans(make_shards.parse_args(_shard_args(root, out)), resolve_ffmpeg())
    with pytest.raises(ManifestError, match=shard_name("test", 2)):
        make_shards.finalize(out, plans, make_shards.DEFAULT_MAX_SHARD_BYTES)


def test_slurm_example_passes_the_array_resources_and_names_the_finalize_log(tmp_path):
    script = REPO_ROOT / "scripts" / "slurm" / "shards.sbatch"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    submissions = tmp_path / "submissions"
    (fake_bin / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> "{submissions}"\necho 77\n')
    (fake_bin / "sbatch").chmod(0o755)
    environment = dict(os.environ, DATA_ROOT=str(tmp_path), PATH=f"{fake_bin}:{os.environ['PATH']}",
                       CPUS_PER_TASK="2", MEM="3G", TIME="00:40:00", SBATCH_ARGS="--qos=short --nice=5")
    environment.pop("SLURM_JOB_ID", None)
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=environment, check=True, capture_output=True)
    array, finalize = (line.split() for line in submissions.read_text().splitlines())
    assert array[array.index("--cpus-per-task") + 1] == "2" and array[array.index("--mem") + 1] == "3G"
    assert array[array.index("--time") + 1] == "00:40:00" and {"--qos=short", "--nice=5"} <= set(array)
    assert "--output=slurm-%x-%j.out" in finalize and {"--qos=short", "--nice=5"} <= set(finalize)
    assert "--cpus-per-task=1" in finalize and "--mem=4G" in finalize  # the finalize job's own resources
    environment = {key: value for key, value in environment.items()
                   if key not in ("CPUS_PER_TASK", "MEM", "TIME", "SBATCH_ARGS")}
    submissions.unlink()
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=environment, check=True, capture_output=True)
    array, _ = (line.split() for line in submissions.read_text().splitlines())
    assert not {"--cpus-per-task", "--mem", "--time"} & set(array)  # the #SBATCH lines stay the defaults


def test_slurm_example_submits_slices_and_finalize_that_reproduce_the_shards(dataset, built, tmp_path):
    root, _ = dataset
    script = REPO_ROOT / "scripts" / "slurm" / "shards.sbatch"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    submissions = tmp_path / "submissions"
    (fake_bin / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> "{submissions}"\necho 4242\n')
    (fake_bin / "sbatch").chmod(0o755)
    out = tmp_path / "shards"
    flags = f"--short-side 0 --train-shards {TRAIN_SHARDS} --eval-shards {EVAL_SHARDS} --batch-videos 4 " \
            "--max-skip-fraction 0.5"
    base = dict(os.environ, DATA_ROOT=str(root), SHARDS=str(out), PYTHON=sys.executable, SHARD_ARGS=flags, SLICES="2")
    submit_env = dict(base, PATH=f"{fake_bin}:{os.environ['PATH']}")
    submit_env.pop("SLURM_JOB_ID", None)
    subprocess.run(["bash", str(script)], cwd=REPO_ROOT, env=submit_env, check=True, capture_output=True)
    lines = submissions.read_text().splitlines()
    assert "--array=0-1" in lines[0] and "--dependency=afterany:4242" in lines[1] and "SHARDS_FINALIZE=1" in lines[1]
    for task in ("0", "1"):
        task_env = dict(base, SLURM_JOB_ID="1", SLURM_ARRAY_TASK_ID=task, SLURM_ARRAY_TASK_COUNT="2",
                        SLURM_ARRAY_TASK_MIN="0", SLURM_CPUS_PER_TASK="1")  # fmt: skip
        subprocess.run(["bash", str(script)], cwd=REPO_ROOT, env=task_env, check=True, capture_output=True)
    assert not list(out.glob("*.manifest.json"))
    finalize_env = dict(base, SLURM_JOB_ID="2", SHARDS_FINALIZE="1")
    subprocess.run(["bash", str(script)], cwd=REPO_ROOT, env=finalize_env, check=True, capture_output=True)
    assert _tar_bytes(out) == _tar_bytes(built)
    assert manifest_path(out, "train").read_bytes() == manifest_path(built, "train").read_bytes()


@pytest.mark.parametrize(("cpus", "workers"), [("1", "1"), ("2", "1"), ("3", "1"), ("16", "8"), (None, "1")])
def test_slurm_example_starts_one_worker_per_two_cpus_of_the_task(tmp_path, cpus, workers):
    """The array task's workers follow make shards' default rule: half the task's CPUs, at least one."""
    fake_python = tmp_path / "python"
    recorded = tmp_path / "argv"
    fake_python.write_text(f'#!/bin/sh\necho "$@" > "{recorded}"\n')
    fake_python.chmod(0o755)
    environment = dict(os.environ, DATA_ROOT=str(tmp_path), SHARDS=str(tmp_path / "shards"), PYTHON=str(fake_python),
                       SLURM_JOB_ID="1", SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="1")
    environment.pop("SLURM_CPUS_PER_TASK", None)
    if cpus is not None:
        environment["SLURM_CPUS_PER_TASK"] = cpus
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "slurm" / "shards.sbatch")], cwd=tmp_path, env=environment,
                   check=True, capture_output=True)
    argv = recorded.read_text().split()
    assert argv[argv.index("--workers") + 1] == workers


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (3, 1), (4, 2), (64, 32)])
def test_default_workers_are_half_the_usable_cores(monkeypatch, cores, workers):
    monkeypatch.setattr(make_shards, "default_workers", lambda: cores)
    assert make_shards.default_shard_workers() == workers
