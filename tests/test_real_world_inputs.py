"""`make shards` on real-world inputs made by ffmpeg: non-square pixels (SAR), images named .webm, alpha, audio only.

Images named .webm include one-frame GIF and APNG (animation containers holding a still image), beside animated
GIFs that are videos.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preprocess import make_shards, verify_shards
from preprocess.datasets.ssv2 import video_path
from preprocess.ffmpeg_tools import resolve_ffmpeg
from shard_format import manifest_path, read_manifest
from preprocess.synthetic import generate_dataset
from preprocess.video_decode import REASON_IMAGE, decode_videos, scale_filter

CLIP = "r=10:d=1"
BRIGHT, DARK = 200, 40
# Coded 48x32, left half bright, right half dark: at the display aspect (SAR 4:3) 64x32, the edge at x = 32.
SAR_SOURCE = f"color=black:s=48x32:{CLIP},format=yuv420p,geq=lum='if(lt(X,24),{BRIGHT},{DARK})':cb=128:cr=128"
# Left half fully transparent red, right half opaque red.
ALPHA_SOURCE = f"color=red:s=32x32:{CLIP},format=rgba,geq=r=255:g=0:b=0:a='if(lt(X,16),0,255)'"
VP9 = ["-c:v", "libvpx-vp9", "-deadline", "good", "-cpu-used", "4"]
FILES = {
    "sar43": (["-f", "lavfi", "-i", f"{SAR_SOURCE},setsar=4/3"], [*VP9, "-pix_fmt", "yuv420p"], "webm"),
    "sar34_portrait": (["-f", "lavfi", "-i", f"testsrc=s=48x64:{CLIP},setsar=3/4"], [*VP9, "-pix_fmt", "yuv420p"],
                       "webm"),
    "sar43_h264": (["-f", "lavfi", "-i", f"{SAR_SOURCE},setsar=4/3"], ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
                   "mp4"),
    # MPEG-TS and raw H.264 carry the SAR only in the bitstream (the input dump does not show it).
    "sar43_ts": (["-f", "lavfi", "-i", f"{SAR_SOURCE},setsar=4/3"], ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
                 "ts"),
    "sar43_raw_h264": (["-f", "lavfi", "-i", f"{SAR_SOURCE},setsar=4/3"], ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
                       "h264"),
    "square_tagged": (["-f", "lavfi", "-i", f"testsrc=s=48x32:{CLIP},setsar=1"], [*VP9, "-pix_fmt", "yuv420p"], "webm"),
    "square_portrait": (["-f", "lavfi", "-i", f"testsrc=s=32x48:{CLIP}"], [*VP9, "-pix_fmt", "yuv420p"], "webm"),
    "jpeg_image": (["-f", "lavfi", "-i", "testsrc=s=32x32"], ["-frames:v", "1", "-c:v", "mjpeg", "-f", "image2"],
                   "jpg"),
    "png_image": (["-f", "lavfi", "-i", "testsrc=s=32x32"], ["-frames:v", "1", "-c:v", "png", "-f", "image2"], "png"),
    "gif_one_frame": (["-f", "lavfi", "-i", "testsrc=s=32x32"], ["-frames:v", "1"], "gif"),
    "gif_animated": (["-f", "lavfi", "-i", f"testsrc=s=32x32:{CLIP}"], [], "gif"),
    "apng_animated": (["-f", "lavfi", "-i", f"testsrc=s=32x32:{CLIP}"], ["-f", "apng"], "apng"),
    "alpha_vp9": (["-f", "lavfi", "-i", ALPHA_SOURCE], [*VP9, "-pix_fmt", "yuva420p"], "webm"),
    "alpha_vp8": (["-f", "lavfi", "-i", ALPHA_SOURCE], ["-c:v", "libvpx", "-pix_fmt", "yuva420p", "-auto-alt-ref", "0"],
                  "webm"),
    "audio_only": (["-f", "lavfi", "-i", "sine=d=1"], ["-c:a", "libvorbis"], "webm"),
}


def _make_file(folder: Path, name: str) -> Path:
    """Write one test file with ffmpeg; return its path (images and mp4 keep their true extension)."""
    inputs, outputs, extension = FILES[name]
    path = folder / f"{name}.{extension}"
    command = [resolve_ffmpeg().path, "-v", "error", "-y", *inputs, *outputs, "-fflags", "+bitexact", str(path)]
    subprocess.run(command, check=True)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every test file, by name."""
    folder = tmp_path_factory.mktemp("real_world")
    return {name: _make_file(folder, name) for name in FILES}


def _rgb(jpeg: bytes) -> np.ndarray:
    """A JPEG frame as an RGB array."""
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


def _raw_frames(path: Path, chain: str, extra_input: tuple[str, ...] = ()) -> bytes:
    """The raw RGB bytes ffmpeg gives for a video through a filter chain (no JPEG step)."""
    command = [resolve_ffmpeg().path, "-v", "error", *extra_input, "-nofind_stream_info", "-i", str(path),
               "-map", "0:v:0", "-vf", chain, "-fps_mode", "passthrough", "-f", "rawvideo", "-"]  # fmt: skip
    return subprocess.run(command, capture_output=True, check=True).stdout


@pytest.mark.parametrize("name", ["sar43", "sar43_h264", "sar43_ts", "sar43_raw_h264"])
def test_non_square_pixels_are_stored_at_the_display_aspect(files, name):
    native = decode_videos(resolve_ffmpeg().path, [files[name]], 0, 95, 1)[0]
    short = decode_videos(resolve_ffmpeg().path, [files[name]], 24, 95, 1)[0]
    assert (native.width, native.height, native.source_sar) == (64, 32, "4:3") and len(native.frames) == 10
    assert (short.width, short.height, short.source_sar) == (48, 24, "4:3")
    frame = _rgb(native.frames[0]).mean(axis=(0, 2))
    assert frame[:29].min() > (BRIGHT + DARK) / 2 > frame[35:].max()  # the coded edge at x=24 is now at x=32


def test_portrait_non_square_and_square_sizes(files):
    videos = decode_videos(resolve_ffmpeg().path, [files["sar34_portrait"], files["square_portrait"]], 24, 90, 2)
    assert (videos[0].width, videos[0].height, videos[0].source_sar) == (24, 43, "3:4")  # display 36x64
    assert (videos[1].width, videos[1].height, videos[1].source_sar) == (24, 36, None)


@pytest.mark.parametrize("short_side", [0, 24])
@pytest.mark.parametrize("name", ["square_tagged", "square_portrait"])
def test_square_pixels_give_the_same_bytes_as_the_former_filter_chain(files, name, short_side):
    former = "scale,format=rgb24"
    if short_side:
        former = f"scale=w='if(lte(iw,ih),{short_side},-1)':h='if(lte(iw,ih),-1,{short_side})',{former}"
    now = _raw_frames(files[name], scale_filter(short_side, output_index=0))
    assert now and now == _raw_frames(files[name], former)


@pytest.mark.parametrize("name", ["alpha_vp9", "alpha_vp8"])
def test_alpha_is_composited_on_black(files, name):
    (video,) = decode_videos(resolve_ffmpeg().path, [files[name]], 0, 95, 1)
    assert video.error is None and video.composited_alpha and len(video.frames) == 10
    frame = _rgb(video.frames[0])
    assert frame[:, :12].max() < 12  # transparent: black
    assert frame[:, 20:, 0].min() > 230 and frame[:, 20:, 1:].max() < 20  # opaque: red
    plain = np.frombuffer(_raw_frames(files[name], "scale,format=rgb24"), np.uint8)[: 32 * 32 * 3]
    assert plain.reshape(32, 32, 3)[:, :12, 0].min() > 230  # ffmpeg's own decoder keeps the colour under alpha 0


@pytest.mark.parametrize("name", ["jpeg_image", "png_image"])
def test_an_image_named_webm_is_not_a_video(files, name, tmp_path):
    disguised = tmp_path / "123.webm"
    disguised.write_bytes(files[name].read_bytes())
    neighbour = files["square_tagged"]
    for batch in (2, 1):
        videos = decode_videos(resolve_ffmpeg().path, [neighbour, disguised], 0, 90, batch)
        container = "jpeg_pipe" if name == "jpeg_image" else "png_pipe"
        assert videos[1].error == f"{REASON_IMAGE}: {container}" and not videos[1].frames
        assert videos[0].error is None and len(videos[0].frames) == 10


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _one_frame_apng(png: bytes) -> bytes:
    """An ffmpeg-written PNG turned into a one-frame APNG (acTL and fcTL before IDAT, as other encoders write it).

    ffmpeg's apng muxer writes acTL only for several frames, so the chunks are added here.
    """
    header_end = 8 + 8 + 13 + 4  # signature, IHDR
    width, height = struct.unpack(">II", png[16:24])
    animation = _png_chunk(b"acTL", struct.pack(">II", 1, 0))
    frame = _png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 10, 0, 0))
    return png[:header_end] + animation + frame + png[header_end:]


def test_one_frame_gif_and_apng_are_images_and_animations_are_videos(files, tmp_path):
    apng = tmp_path / "apng_one_frame.webm"
    apng.write_bytes(_one_frame_apng(files["png_image"].read_bytes()))
    stills = {"gif": files["gif_one_frame"], "apng": apng}
    animations = [files["gif_animated"], files["apng_animated"]]
    for batch in (4, 1):
        videos = decode_videos(resolve_ffmpeg().path, [*stills.values(), *animations], 0, 90, batch)
        assert [video.error for video in videos[:2]] == [f"{REASON_IMAGE}: {name}" for name in stills]
        assert all(video.error is None and len(video.frames) == 10 for video in videos[2:])
        assert all((video.width, video.height) == (32, 32) for video in videos[2:])


def test_make_shards_records_sar_alpha_and_skips_images_and_audio(files, tmp_path):
    root = tmp_path / "root"
    generate_dataset(root, 1, num_frames=6, width=32, height=32, split_fractions=(1.0, 0.0, 0.0), classes=2,
                     workers=1)  # fmt: skip
    train_file = root / "labels" / "train.json"
    train = json.loads(train_file.read_text())
    added = {"700001": "sar43", "700002": "alpha_vp9", "700003": "jpeg_image", "700004": "audio_only"}
    for video_id, name in added.items():
        video_path(root, video_id).write_bytes(files[name].read_bytes())
        train.append(dict(train[0], id=video_id))
    train_file.write_text(json.dumps(train))
    out = tmp_path / "shards"
    status = make_shards.main([
        "--data-root", str(root), "--out", str(out), "--short-side", "0", "--splits", "train", "--train-shards", "2",
        "--workers", "1", "--no-progress", "--max-skip-fraction", "0.5", "--slice-index", "0", "--slice-count", "1",
    ])  # fmt: skip
    assert status == make_shards.EXIT_OK
    manifest = read_manifest(manifest_path(out, "train"))
    assert {"pixel_aspect", "alpha", "non_video"} <= set(manifest["settings"])
    reasons = {entry["id"]: entry["reason"] for entry in manifest["skipped"]}
    assert reasons == {"700003": f"{REASON_IMAGE}: jpeg_pipe", "700004": "no decodable frame: no video stream"}
    samples = {}
    for shard in manifest["shards"]:
        for key, members in verify_shards.iter_samples(out / shard["name"]):
            samples[key] = json.loads(members[".json"])
    assert (samples["700001"]["width"], samples["700001"]["height"], samples["700001"]["source_sar"]) == (64, 32, "4:3")
    assert all("source_sar" not in meta for key, meta in samples.items() if key != "700001")
    assert verify_shards.main(["--shards", str(out), "--full-decode"]) == 0
