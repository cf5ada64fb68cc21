"""SSv2 shards are byte-identical to those the SSv2-only `make shards` wrote before the dataset interface.

The expected SHA-256 of every tar and the settings (all but the machine's ffmpeg path, ffmpeg version and JPEG
library) were recorded with the SSv2-only code on the synthetic input built here: 3 classes x 3 clips of 40x24
(seed 11), plus a missing video, an unknown template and a duplicate id in train.json, written at native size and
at short side 48. The tar bytes depend on the ffmpeg build (decoding) and on libjpeg-turbo (encoding): they are
compared where both are the ones of the recording (imageio-ffmpeg 9.0.2, Pillow 13.0.0 with libjpeg-turbo 3.2.0);
the settings, the skipped list and the counts are compared everywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from preprocess import make_shards
from preprocess.synthetic import generate_dataset
from shard_format import manifest_path, read_manifest, settings_hash

RECORDED_FFMPEG = "ffmpeg version n9.0.2-17-g2a571b6068-20260930 Copyright (c) 2000-2026 the FFmpeg developers"
RECORDED_JPEG = "Pillow 13.0.0, libjpeg-turbo 3.2.0, IJG quality scale, 4:2:0 chroma, baseline"
ENVIRONMENT_KEYS = ("ffmpeg_path", "ffmpeg_version", "jpeg_encoder")
EXPECTED_TARS = {
    "0": {
        "test-000000.tar": "aa857f93013335e973ffc3f0b6d053742cc83137db4c54ee01c5a3d05d9330e7",
        "train-000000.tar": "6056b10275304cf9f41836743977dfc929413a8130ef7f2d63653ccd3a1e7a56",
        "train-000001.tar": "bcde9c8298309de7f3f84506f5b070e467dcb58f03639ce279d58ba93d2eb082",
        "validation-000000.tar": "9c270cbd26ee13f84b435fd25c14df5b55b6e07af841255b63d6ccc6274fe59c",
    },
    "48": {
        "test-000000.tar": "737d77b0112d6b05b87636b6319987f475e089fb0d38942df100478847724840",
        "train-000000.tar": "bf12fdfb489e9ade5c79efe6989a04cdedeb3281de5e806e4d1abbaa905764a9",
        "train-000001.tar": "1e8980240eed9f2b04f0053ed94705b440005d409543214adad583bbfe4ab71c",
        "validation-000000.tar": "e69cce2d2ead6a5ef2816bf59c52b4ff1b493021db43b129257d104bd324673f",
    },
}
EXPECTED_COUNTS = {"train": (3, 24), "validation": (3, 20), "test": (3, 29)}
EXPECTED_ANNOTATIONS = {"train": "a8d63878bfca6f2f", "validation": "9895fe012d0aa1b7", "test": "05e46a9d78cd411a"}
EXPECTED_SKIPPED = [
    {"id": "7", "reason": "duplicate id: 7 already in train.json"},
    {"id": "9001", "reason": "missing video file"},
    {"id": "9002", "reason": "template not in labels.json: 'Juggling something'"},
]
# The hash recorded on the recording machine (its ffmpeg path included) for train at short side 48.
RECORDED_TRAIN_48 = {
    "alpha": "VP8/VP9 alpha decoded with libvpx and composited on black (RGB = colour x alpha)",
    "annotations": "a8d63878bfca6f2f",
    "format_version": 1,
    "frames": "every frame at the native frame rate (ffmpeg -fps_mode passthrough)",
    "jpeg_quality": 90,
    "non_video": "a still image (image demuxer, or a one-frame GIF/APNG/animated WebP/JPEG XL, whatever the file "
                 "name) is skipped as not a video; an animation of several frames is a video",
    "num_classes": 3,
    "num_shards": 2,
    "pixel_aspect": "square pixels: a non-square sample aspect ratio is resized to the display aspect (coded width "
                    "x SAR) in the same resize; the SAR it applied (the container's, else the bitstream's) is in the "
                    "sample's \"source_sar\" (absent: square)",
    "resize": "ffmpeg scale (bicubic) in YUV, then unscaled YUV to RGB",
    "seed": 0,
    "short_side": 48,
    "size_rule": "short side 48 (landscape: height 48, width keeps the aspect ratio, as -1:48)",
    "split": "train",
}
RECORDED_PATH = "/work/wt/datasets/.venv/lib/python3.11/site-packages/imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v9.0.2"
RECORDED_HASH_TRAIN_48 = "f95ba648cc5180bd"


def _build_input(root: Path) -> None:
    """The synthetic SSv2 input of the recording: 9 clips and three unusable train entries."""
    generate_dataset(root, 3, num_frames=(6, 10), width=40, height=24, split_fractions=(0.34, 0.33, 0.33),
                     classes=3, seed=11, workers=1)
    labels = root / "labels"
    videos = root / "data" / "20bn-something-something-v2"
    train = json.loads((labels / "train.json").read_text())
    train.append({"id": "9001", "label": "x", "template": train[0]["template"], "placeholders": []})
    train.append({"id": "9002", "label": "x", "template": "Juggling [something]", "placeholders": []})
    train.append(dict(train[1]))
    (labels / "train.json").write_text(json.dumps(train))
    (videos / "9002.webm").write_bytes((videos / f"{train[0]['id']}.webm").read_bytes())


@pytest.fixture(scope="module")
def ssv2_input(tmp_path_factory) -> Path:
    """The synthetic SSv2 input of the recording."""
    root = tmp_path_factory.mktemp("ssv2_input")
    _build_input(root)
    return root


@pytest.fixture(scope="module")
def written(ssv2_input, tmp_path_factory) -> dict[str, Path]:
    """The shards of the recording's input at native size ("0") and at short side 48, written by today's code."""
    root = ssv2_input
    outputs = {}
    for short_side in EXPECTED_TARS:
        out = tmp_path_factory.mktemp(f"ssv2_shards_{short_side}")
        status = make_shards.main([
            "--data-root", str(root), "--out", str(out), "--short-side", short_side, "--train-shards", "2",
            "--eval-shards", "1", "--workers", "1", "--batch-videos", "2", "--no-progress",
            "--max-skip-fraction", "1", "--slice-index", "0", "--slice-count", "1",
        ])  # fmt: skip
        assert status == make_shards.EXIT_OK
        outputs[short_side] = out
    return outputs


def _environment(out: Path) -> dict[str, str]:
    """The machine-dependent settings of a run (ffmpeg path and version, JPEG library)."""
    settings = read_manifest(manifest_path(out, "train"))["settings"]
    return {key: settings[key] for key in ENVIRONMENT_KEYS}


@pytest.mark.parametrize("short_side", sorted(EXPECTED_TARS))
def test_ssv2_tar_bytes_are_those_of_the_ssv2_only_code(written, short_side):
    out = written[short_side]
    environment = _environment(out)
    if (environment["ffmpeg_version"], environment["jpeg_encoder"]) != (RECORDED_FFMPEG, RECORDED_JPEG):
        pytest.skip(f"tar bytes were recorded with {RECORDED_FFMPEG[:30]} and {RECORDED_JPEG[:30]}")
    found = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(out.glob("*.tar"))}
    assert found == EXPECTED_TARS[short_side]


def test_ssv2_settings_counts_and_skips_are_those_of_the_ssv2_only_code(written):
    for short_side, out in written.items():
        for split, (samples, frames) in EXPECTED_COUNTS.items():
            manifest = read_manifest(manifest_path(out, split))
            settings = dict(manifest["settings"])
            digest = settings.pop("hash")
            assert settings_hash(settings) == digest
            assert settings["annotations"] == EXPECTED_ANNOTATIONS[split]
            assert (manifest["num_samples"], manifest["num_frames"]) == (samples, frames)
            assert manifest["skipped"] == (EXPECTED_SKIPPED if split == "train" else [])
            assert manifest["class_names"] == ["Moving something from left to right",
                                               "Moving something from right to left", "Moving something up"]
            if short_side == "48" and split == "train":
                assert {key: value for key, value in settings.items() if key not in ENVIRONMENT_KEYS} == (
                    RECORDED_TRAIN_48)
                recorded = dict(RECORDED_TRAIN_48, ffmpeg_path=RECORDED_PATH, ffmpeg_version=RECORDED_FFMPEG,
                                jpeg_encoder=RECORDED_JPEG)
                assert settings_hash(recorded) == RECORDED_HASH_TRAIN_48
                assert digest == settings_hash(dict(RECORDED_TRAIN_48, **_environment(out)))


def test_ssv2_manifests_name_the_dataset_and_training_never_flips_by_default(written, tmp_path):
    import train

    out = written["0"]
    for split in EXPECTED_COUNTS:
        manifest = read_manifest(manifest_path(out, split))
        assert (manifest["dataset"], manifest["flip"]) == ("ssv2", False)
    common = ["--mode", "vanilla", "--frames", "4", "--shards", str(out), "--output", str(tmp_path)]
    assert train.resolve_args(common).flip is False and train.resolve_args(common).dataset == "ssv2"
    assert train.resolve_args([*common, "--flip"]).flip is True
    assert train.resolve_args([*common, "--preset", "official"]).weight_decay == 5e-4


def test_a_rerun_on_ssv2_shards_rewrites_no_shard(ssv2_input, written):
    out = written["48"]
    stamps = {path.name: path.stat().st_mtime_ns for path in sorted(out.glob("*.tar*"))}
    status = make_shards.main([
        "--dataset", "ssv2", "--data-root", str(ssv2_input), "--out", str(out), "--short-side", "48",
        "--train-shards", "2", "--eval-shards", "1", "--workers", "1", "--batch-videos", "2", "--no-progress",
        "--max-skip-fraction", "1", "--slice-index", "0", "--slice-count", "1",
    ])  # fmt: skip
    assert status == make_shards.EXIT_OK
    assert {path.name: path.stat().st_mtime_ns for path in sorted(out.glob("*.tar*"))} == stamps
