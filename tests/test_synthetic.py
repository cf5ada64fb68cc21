"""The synthetic SSv2-format generator: decodable VP9 files, SSv2 label schemas, determinism, no appearance cue."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from preprocess import ffmpeg_tools, synthetic
from shard_format import SPLITS

VIDEOS_PER_CLASS = 3
NUM_FRAMES = 16
WIDTH, HEIGHT = 40, 32
SPLIT = (0.34, 0.33, 0.33)
SEED = 5
BRIGHTNESS_MARGIN = 0.2
APPEARANCE_CLIPS_PER_CLASS = 30
CHANCE_TAIL_PROBABILITY = 1e-3
SINGLE_CLASS_Z_THRESHOLD = 4.5


def decode(path: Path, width: int, height: int) -> np.ndarray:
    """Decode a video with the ffmpeg decoder (not the generator) to uint8 RGB frames (T, H, W, 3)."""
    ffmpeg = ffmpeg_tools.resolve_ffmpeg().path
    command = [ffmpeg, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    assert len(raw) % (width * height * 3) == 0, f"{path}: decoded bytes do not match {width}x{height}"
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def stream_description(path: Path) -> str:
    """Return ffmpeg's description of the file's container and streams (its stderr for `-i path`)."""
    ffmpeg = ffmpeg_tools.resolve_ffmpeg().path
    return subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def generate(root: Path, **overrides) -> dict:
    """Generate the small test dataset (overrides replace the defaults)."""
    settings = dict(videos_per_class=VIDEOS_PER_CLASS, num_frames=NUM_FRAMES, width=WIDTH, height=HEIGHT,
                    split_fractions=SPLIT, seed=SEED, workers=2)
    settings.update(overrides)
    return synthetic.generate_dataset(root, **settings)


def read_labels(root: Path) -> dict[str, object]:
    """Read the four label files of a generated dataset."""
    return {name: json.loads((root / "labels" / name).read_text()) for name in synthetic.LABEL_FILES}


def object_mask(frames: np.ndarray) -> np.ndarray:
    """Pixels clearly brighter than their frame's median: the moving object (frames (T, H, W, 3) -> (T, H, W))."""
    brightness = frames.astype(np.float32).mean(axis=-1) / 255.0
    median = np.median(brightness.reshape(len(frames), -1), axis=1)
    return brightness > median[:, None, None] + BRIGHTNESS_MARGIN


def object_track(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the object's centroid (T, 2) as (x, y) and its area in pixels (T,), measured from the pixels."""
    mask = object_mask(frames)
    area = mask.sum(axis=(1, 2)).astype(np.float64)
    rows, cols = np.indices(mask.shape[1:])
    safe = np.maximum(area, 1.0)
    centre_x = (mask * cols).sum(axis=(1, 2)) / safe
    centre_y = (mask * rows).sum(axis=(1, 2)) / safe
    return np.stack([centre_x, centre_y], axis=1), area


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    """One small dataset: every class, 3 videos each, 16 frames of 40x32."""
    root = tmp_path_factory.mktemp("synthetic") / "ds"
    return root, generate(root)


@pytest.fixture(scope="module")
def dataset_again(tmp_path_factory) -> Path:
    """The same settings and seed generated a second time, elsewhere, with one worker."""
    root = tmp_path_factory.mktemp("synthetic_again") / "ds"
    generate(root, workers=1)
    return root


def all_entries(root: Path) -> list[tuple[str, dict]]:
    """Return (split, entry) for every annotated video."""
    labels = read_labels(root)
    return [(split, entry) for split in SPLITS for entry in labels[f"{split}.json"]]


def test_every_video_decodes_as_vp9_webm_of_requested_size_and_length(dataset):
    root, summary = dataset
    entries = all_entries(root)
    video_dir = root / "data" / "20bn-something-something-v2"
    assert len(entries) == len(synthetic.CLASS_TEMPLATES) * VIDEOS_PER_CLASS == summary["num_videos"]
    assert sorted(path.name for path in video_dir.iterdir()) == sorted(f"{entry['id']}.webm" for _, entry in entries)
    for _, entry in entries:
        path = video_dir / f"{entry['id']}.webm"
        assert decode(path, WIDTH, HEIGHT).shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    description = stream_description(video_dir / f"{entries[0][1]['id']}.webm")
    assert "webm" in description and "Video: vp9" in description and "12 fps" in description


def test_labels_json_maps_every_bracket_free_template_to_its_index_string(dataset):
    root, _ = dataset
    labels = read_labels(root)["labels.json"]
    expected = {template.replace("[", "").replace("]", ""): str(index)
                for index, template in enumerate(synthetic.CLASS_TEMPLATES)}
    assert labels == expected


def test_train_and_validation_entries_follow_the_ssv2_schema(dataset):
    root, _ = dataset
    files = read_labels(root)
    labels = files["labels.json"]
    for split in ("train", "validation"):
        assert files[f"{split}.json"], f"{split} is empty"
        for entry in files[f"{split}.json"]:
            assert set(entry) == {"id", "label", "template", "placeholders"}
            assert isinstance(entry["id"], str) and re.fullmatch(r"[0-9]+", entry["id"])
            assert entry["template"].count("[") == len(entry["placeholders"]) == 1
            assert entry["label"] == synthetic.fill_template(entry["template"], entry["placeholders"])
            assert entry["template"].replace("[", "").replace("]", "") in labels


def test_test_json_has_ids_only_and_ids_are_unique(dataset):
    root, _ = dataset
    files = read_labels(root)
    assert files["test.json"] and all(set(entry) == {"id"} for entry in files["test.json"])
    ids = [entry["id"] for _, entry in all_entries(root)]
    assert len(ids) == len(set(ids))


def test_splits_are_stratified_by_class(dataset):
    root, summary = dataset
    files = read_labels(root)
    for split in ("train", "validation"):
        counts = {}
        for entry in files[f"{split}.json"]:
            counts[entry["template"]] = counts.get(entry["template"], 0) + 1
        assert counts == {template: 1 for template in synthetic.CLASS_TEMPLATES}
    assert summary["counts"] == {split: len(synthetic.CLASS_TEMPLATES) for split in SPLITS}


def test_the_annotation_reader_accepts_the_dataset(dataset):
    from preprocess.datasets import ssv2 as annotations

    root, _ = dataset
    loaded = annotations.load_annotations(root)
    assert sum(len(entries) for entries in loaded.values()) == len(all_entries(root))


def test_decoded_motion_agrees_with_the_template(dataset):
    root, _ = dataset
    video_dir = root / "data" / "20bn-something-something-v2"
    checks = {
        "Moving [something] from left to right": lambda shift, growth: shift[0] > 4,
        "Moving [something] from right to left": lambda shift, growth: shift[0] < -4,
        "Moving [something] up": lambda shift, growth: shift[1] < -4,
        "Moving [something] down": lambda shift, growth: shift[1] > 4,
        "Approaching [something] with your camera": lambda shift, growth: growth > 2.0,
        "Moving away from [something] with your camera": lambda shift, growth: growth < 0.5,
        "Holding [something] still": lambda shift, growth: np.hypot(*shift) < 1.0,
        "Moving [something] quickly across the view": lambda shift, growth: np.hypot(*shift) > 12,
    }
    checked = 0
    for split, entry in all_entries(root):
        if split == "test" or entry["template"] not in checks:
            continue
        centre, area = object_track(decode(video_dir / f"{entry['id']}.webm", WIDTH, HEIGHT))
        shift, growth = centre[-1] - centre[0], area[-1] / max(area[0], 1.0)
        assert checks[entry["template"]](shift, growth), (entry, shift, growth)
        checked += 1
    assert checked == 2 * len(checks)


def test_iter_clips_gives_the_encoded_frames_and_annotations(dataset):
    root, _ = dataset
    clips = list(synthetic.iter_clips(VIDEOS_PER_CLASS, NUM_FRAMES, WIDTH, HEIGHT, SPLIT, SEED))
    entries = all_entries(root)
    assert [(clip["split"], clip["id"]) for clip in clips] == [(split, entry["id"]) for split, entry in entries]
    labels = read_labels(root)["labels.json"]
    video_dir = root / "data" / "20bn-something-something-v2"
    for clip, (split, entry) in zip(clips, entries):
        if split != "test":
            assert clip["template"] == entry["template"] and clip["placeholders"] == entry["placeholders"]
            assert str(clip["label"]) == labels[entry["template"].replace("[", "").replace("]", "")]
    for clip in clips[:4]:
        decoded = decode(video_dir / f"{clip['id']}.webm", WIDTH, HEIGHT).astype(np.int16)
        own_error = np.abs(decoded - clip["frames"]).mean()
        other_error = np.abs(decoded - clips[-1]["frames"]).mean()
        assert own_error < 8 and own_error < other_error / 3


def test_one_seed_gives_identical_annotations_and_decoded_frames(dataset, dataset_again):
    root, _ = dataset
    for name in synthetic.LABEL_FILES:
        assert (root / "labels" / name).read_bytes() == (dataset_again / "labels" / name).read_bytes()
    video_dir = Path("data") / "20bn-something-something-v2"
    for _, entry in all_entries(root):
        first = decode(root / video_dir / f"{entry['id']}.webm", WIDTH, HEIGHT)
        second = decode(dataset_again / video_dir / f"{entry['id']}.webm", WIDTH, HEIGHT)
        assert np.array_equal(first, second), entry["id"]


def test_another_seed_gives_other_frames():
    first = synthetic.render_clip(0, synthetic.clip_rng(0, 0, 0), num_frames=4)
    again = synthetic.render_clip(0, synthetic.clip_rng(0, 0, 0), num_frames=4)
    other = synthetic.render_clip(0, synthetic.clip_rng(1, 0, 0), num_frames=4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_existing_dataset_is_refused_without_force_and_replaced_with_it(tmp_path, capsys):
    root = tmp_path / "ds"
    generate(root, videos_per_class=2, classes=2, num_frames=(10, 14), split_fractions=(0.5, 0.5, 0.0))
    before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    with pytest.raises(synthetic.DatasetExistsError, match="--force"):
        generate(root, videos_per_class=2, classes=2)
    argv = ["--root", str(root), "--videos-per-class", "2", "--classes", "2"]
    assert synthetic.main(argv) != 0
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and str(root) in error_lines[0] and "--force" in error_lines[0]
    assert {path: path.read_bytes() for path in root.rglob("*") if path.is_file()} == before
    summary = generate(root, videos_per_class=1, classes=3, seed=9, force=True)
    videos = sorted((root / "data" / "20bn-something-something-v2").glob("*.webm"))
    assert len(videos) == summary["num_videos"] == 3
    assert json.loads((root / "labels" / "generator.json").read_text())["seed"] == 9


def test_frame_range_gives_each_video_its_planned_length(tmp_path):
    root = tmp_path / "ds"
    generate(root, videos_per_class=3, classes=2, num_frames=(10, 14), split_fractions=(1.0, 0.0, 0.0))
    plans = synthetic.plan_dataset(3, (10, 14), (1.0, 0.0, 0.0), SEED, classes=2)
    lengths = {plan.video_id: plan.num_frames for plan in plans}
    assert len(set(lengths.values())) > 1 and all(10 <= length <= 14 for length in lengths.values())
    for video_id, length in lengths.items():
        path = root / "data" / "20bn-something-something-v2" / f"{video_id}.webm"
        assert decode(path, WIDTH, HEIGHT).shape[0] == length


def test_a_batch_of_one_clip_gives_one_file(tmp_path):
    summary = generate(tmp_path / "ds", videos_per_class=1, classes=1, num_frames=7, split_fractions=(1.0, 0.0, 0.0))
    (video,) = (tmp_path / "ds" / "data" / "20bn-something-something-v2").iterdir()
    assert summary["num_videos"] == 1 and decode(video, WIDTH, HEIGHT).shape == (7, HEIGHT, WIDTH, 3)


def test_a_failed_batch_leaves_no_file(tmp_path):
    ffmpeg = ffmpeg_tools.resolve_ffmpeg().path
    clips = [np.zeros((4, 8, 8, 3), np.uint8), np.zeros((5, 8, 8, 3), np.uint8)]
    paths = [tmp_path / "1.webm", tmp_path / "2.webm"]
    with pytest.raises(ValueError, match="expected uint8"):
        synthetic.encode_webm_batch(iter(clips), [4, 6], paths, 12, ffmpeg, 8, 8)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="1.webm"):
        synthetic.encode_webm_batch(iter(clips), [4, 5], paths, 12, "false", 8, 8)
    assert list(tmp_path.iterdir()) == []
    synthetic.encode_webm_batch(iter(clips), [4, 5], paths, 12, ffmpeg, 8, 8)
    assert [decode(path, 8, 8).shape[0] for path in paths] == [4, 5] and len(list(tmp_path.iterdir())) == 2


def test_missing_ffmpeg_is_one_line_naming_the_binaries_tried(tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "no-such-ffmpeg")
    monkeypatch.setattr(ffmpeg_tools, "_candidates", lambda: [("$FFMPEG_BINARY", missing), ("PATH", None)])
    ffmpeg_tools.resolve_ffmpeg.cache_clear()
    try:
        code = synthetic.main(["--root", str(tmp_path / "ds"), "--videos-per-class", "1"])
    finally:
        ffmpeg_tools.resolve_ffmpeg.cache_clear()
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(error_lines) == 1
    assert missing in error_lines[0] and "FFMPEG_BINARY" in error_lines[0]
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    "argv, message",
    [(["--split", "0.5", "0.5", "0.5"], "--split"), (["--classes", "99"], "--classes"), (["--size", "4x4"], "--size")],
)
def test_bad_settings_are_one_line_errors(tmp_path, capsys, argv, message):
    code = synthetic.main(["--root", str(tmp_path / "ds"), "--videos-per-class", "1", *argv])
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(error_lines) == 1 and message in error_lines[0]
    assert not (tmp_path / "ds").exists()


def test_controls_are_added_only_on_request():
    plain = {plan.template_index for plan in synthetic.plan_dataset(1, 4)}
    with_controls = {plan.template_index for plan in synthetic.plan_dataset(1, 4, controls=True)}
    assert plain == set(range(len(synthetic.CLASS_TEMPLATES)))
    assert with_controls == set(range(len(synthetic.ALL_TEMPLATES)))
    appearing = synthetic.ALL_TEMPLATES.index("[Something] appearing")
    _, area = object_track(synthetic.render_clip(appearing, synthetic.clip_rng(0, appearing, 0), num_frames=12))
    assert area[0] == 0 and area[-1] > 10


def binomial_upper_bound(trials: int, probability: float, tail: float) -> int:
    """Smallest k with P(X >= k) <= tail for X ~ Binomial(trials, probability)."""
    survival = 1.0
    for successes in range(trials + 1):
        if survival <= tail:
            return successes
        survival -= math.comb(trials, successes) * probability**successes * (1 - probability) ** (trials - successes)
    return trials + 1


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray, held_out: np.ndarray) -> float:
    """Fit a nearest-centroid classifier on the other clips (standardised features); return held-out accuracy."""
    train = ~held_out
    mean, scale = features[train].mean(axis=0), features[train].std(axis=0) + 1e-9
    normalised = (features - mean) / scale
    classes = np.unique(labels)
    centroids = np.stack([normalised[train & (labels == label)].mean(axis=0) for label in classes])
    distances = ((normalised[held_out, None, :] - centroids[None]) ** 2).sum(axis=-1)
    return float((classes[distances.argmin(axis=1)] == labels[held_out]).mean())


@pytest.fixture(scope="module")
def appearance_study() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw clips of every class: first-frame appearance features, motion features, labels, held-out mask."""
    appearance, motion, labels = [], [], []
    for label in range(len(synthetic.CLASS_TEMPLATES)):
        for index in range(APPEARANCE_CLIPS_PER_CLASS):
            frames = synthetic.render_clip(label, synthetic.clip_rng(11, label, index), num_frames=16)
            centre, area = object_track(frames)
            first = frames[0].reshape(-1, 3).mean(axis=0) / 255.0
            appearance.append([*first, area[0]])
            steps = centre[[4, 8, 12, 15]] - centre[0]
            motion.append([*steps.ravel(), *np.hypot(steps[:, 0], steps[:, 1]), np.log((area[-1] + 1) / (area[0] + 1))])
            labels.append(label)
    held_out = np.arange(len(labels)) % 2 == 1
    return np.array(appearance), np.array(motion), np.array(labels), held_out


def largest_class_shift(features: np.ndarray, labels: np.ndarray) -> float:
    """Largest |z| of (mean of one class - mean of the others) over classes and features (two-sample z)."""
    largest = 0.0
    spread = features.std(axis=0) + 1e-9
    for label in np.unique(labels):
        inside = labels == label
        error = spread * np.sqrt(1.0 / inside.sum() + 1.0 / (~inside).sum())
        shift = (features[inside].mean(axis=0) - features[~inside].mean(axis=0)) / error
        largest = max(largest, float(np.abs(shift).max()))
    return largest


def test_first_frame_appearance_does_not_predict_the_class(appearance_study):
    appearance, motion, labels, held_out = appearance_study
    trials, chance = int(held_out.sum()), 1.0 / len(synthetic.CLASS_TEMPLATES)
    bound = binomial_upper_bound(trials, chance, CHANCE_TAIL_PROBABILITY) / trials
    assert nearest_centroid_accuracy(appearance, labels, held_out) < bound
    # The same classifier does find class information where there is some (the motion), so the test can fail.
    assert nearest_centroid_accuracy(motion, labels, held_out) > 2 * bound


def test_no_single_class_stands_out_in_first_frame_appearance(appearance_study):
    # A leak in one class alone (say, "moving away" starting large) barely moves 12-class accuracy; this catches it.
    appearance, motion, labels, _ = appearance_study
    comparisons = len(synthetic.CLASS_TEMPLATES) * appearance.shape[1]
    threshold = SINGLE_CLASS_Z_THRESHOLD
    assert math.erfc(threshold / math.sqrt(2.0)) * comparisons < CHANCE_TAIL_PROBABILITY
    assert largest_class_shift(appearance, labels) < threshold
    assert largest_class_shift(motion, labels) > threshold
