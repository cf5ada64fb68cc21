"""The GPU-backend path on the CPU: worker-side JPEG header checks and the background decode (prefetch) thread.

The GPU backends refuse a CPU device in build_loader, so these tests build a cpu loader and switch it to the
torchvision decoder on the CPU (the same VideoLoader code path, with no CUDA streams).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_helpers import corrupt, encode_jpeg, make_videos, render_frames

from data_pipeline import build_loader
from data_pipeline import decode as decode_module
from data_pipeline.decode import TorchvisionDecoder
from data_pipeline.jpeg_header import headers_fit, jpeg_frame_size
from data_pipeline.loader import STATS_KEYS, VideoLoader, select_sample
from data_pipeline.options import PipelineConfig
from data_pipeline.prefetch import DEFAULT_PREFETCH, THREAD_NAME, prefetch_outputs
from data_pipeline.stream import iterate_tar, read_split

GARBAGE_ID = "g0003"
WRONG_SIZE_ID = "g0006"
NUM_VIDEOS = 14
BATCH = 4


@pytest.fixture(scope="module")
def shards(tiny_shards: Callable[..., Path]) -> Path:
    """A train split of 14 videos of 32x32 in 3 shards: one with garbage frames, one whose frames are 40x32."""
    videos = make_videos(NUM_VIDEOS, (20, 9, 33), prefix="g")
    corrupt(videos[3])
    wide = render_frames(6, len(videos[6]["frames"]), 40, 32)
    videos[6]["frames"] = [encode_jpeg(frame) for frame in wide]
    return tiny_shards("gpu_path_shards", train=(videos, (6, 5, 3)))


def pil_jpeg(width: int, height: int, mode: str = "RGB", **options) -> bytes:
    """A PIL-encoded JPEG of the given size (random pixels)."""
    pixels = np.random.default_rng(width * height).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mode, options",
    [
        ("RGB", {"quality": 90}),  # baseline SOF0
        ("RGB", {"quality": 75, "progressive": True, "optimize": True}),  # progressive SOF2
        ("L", {"quality": 80}),  # grayscale
        ("RGB", {"quality": 90, "exif": b"Exif\x00\x00" + bytes(64), "comment": b"segment before the frame"}),
    ],
)
def test_marker_parser_reads_pil_jpegs(mode: str, options: dict) -> None:
    jpeg = pil_jpeg(37, 21, mode, **options)
    marker = 0xC2 if options.get("progressive") else 0xC0
    assert bytes([0xFF, marker]) in jpeg
    assert jpeg_frame_size(jpeg) == (37, 21)
    assert headers_fit([jpeg, jpeg], 37, 21) and not headers_fit([jpeg], 21, 37)


def test_marker_parser_rejects_truncated_and_garbage_bytes() -> None:
    jpeg = pil_jpeg(37, 21, quality=90)
    frame_marker = jpeg.index(b"\xff\xc0")
    frame_header_end = frame_marker + 2 + int.from_bytes(jpeg[frame_marker + 2 : frame_marker + 4], "big")
    for cut in (0, 1, 2, 3, 10, frame_header_end - 1):
        assert jpeg_frame_size(jpeg[:cut]) is None, cut
    assert jpeg_frame_size(jpeg[:frame_header_end]) == (37, 21)  # headers only: a cut scan is the decoder's job
    png = io.BytesIO()
    Image.new("RGB", (37, 21)).save(png, format="PNG")
    garbage = [b"", b"\xff\xd8", b"\xff\xd8 not a jpeg", b"\xff\xd8\xff garbage", png.getvalue(), bytes(200)]
    garbage.append(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes())
    garbage.append(jpeg.replace(b"\xff\xc0", b"\xff\xc3", 1))  # lossless frame type
    garbage.append(b"\xff\xd8" + jpeg[jpeg.index(b"\xff\xda") :])  # scan before any frame header
    for data in garbage:
        assert jpeg_frame_size(data) is None, data[:16]
    assert not headers_fit([jpeg, b"\xff\xd8 not a jpeg"], 37, 21)


def selected(shards: Path, check_headers: bool) -> list:
    """Every video of the split, selected as a loader worker does."""
    config = PipelineConfig(frames=(4, 8), batch_size=BATCH, train=True, crop_size=24)
    rng = np.random.default_rng(5)
    entries = read_split(shards, "train")
    return [select_sample(raw, entry.path, config, rng, check_headers) for entry in entries
            for raw in iterate_tar(entry.path)]


def test_workers_record_header_verdicts_for_gpu_backends(shards: Path) -> None:
    samples = selected(shards, check_headers=True)
    verdicts = {sample.video_id: sample.header_ok for sample in samples}
    assert verdicts[GARBAGE_ID] is False and verdicts[WRONG_SIZE_ID] is False
    assert sum(verdicts.values()) == NUM_VIDEOS - 2
    assert all(sample.header_ok is None for sample in selected(shards, check_headers=False))


def test_gpu_decoder_uses_worker_verdicts_without_parsing(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = selected(shards, check_headers=True)[:8]

    def no_parsing(*_args) -> bool:
        raise AssertionError("the main process parsed JPEG headers")

    monkeypatch.setattr(decode_module, "headers_fit", no_parsing)
    batch, replaced = TorchvisionDecoder(torch.device("cpu")).decode(samples)
    assert replaced == 2 and GARBAGE_ID not in batch["id"] and WRONG_SIZE_ID not in batch["id"]
    assert len(batch["id"]) == 8


def gpu_style_loader(shards: Path, prefetch: int | None, decoder=None, workers: int = 2) -> VideoLoader:
    """The train loader of the split with a GPU-style decoder (torchvision on the CPU unless given)."""
    loader = build_loader(
        shards, "train", (4, 8), BATCH, train=True, decode="cpu", device="cpu", num_workers=workers, crop_size=24,
        seed=1, prefetch=prefetch,
    )  # fmt: skip
    return dataclasses.replace(
        loader, decoder=decoder or TorchvisionDecoder(torch.device("cpu")), totals={key: 0 for key in STATS_KEYS}
    )


def live_prefetch_threads() -> list[threading.Thread]:
    """Prefetch threads still alive."""
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


def test_prefetch_gives_the_same_batches_and_stats(shards: Path) -> None:
    runs = {}
    for depth in (0, 2):
        loader = gpu_style_loader(shards, depth)
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            runs[depth, epoch] = list(loader)
        runs[depth, "stats"] = loader.stats()
    assert runs[0, "stats"] == runs[2, "stats"] and runs[2, "stats"]["corrupt_videos_replaced"] >= 1
    assert runs[2, "stats"]["backend"] == "torchvision"
    assert runs[2, "stats"]["batches"] == 2 * (NUM_VIDEOS // BATCH)
    for epoch in (0, 1):
        assert len(runs[0, epoch]) == len(runs[2, epoch]) == NUM_VIDEOS // BATCH
        for plain, ahead in zip(runs[0, epoch], runs[2, epoch]):
            assert plain["id"] == ahead["id"] and torch.equal(plain["label"], ahead["label"])
            assert all(torch.equal(plain["videos"][frames], ahead["videos"][frames]) for frames in (4, 8))
    assert runs[0, 0][0]["id"] != runs[0, 1][0]["id"]  # the epochs differ, so order is really compared
    assert not live_prefetch_threads()


class FailingDecoder(TorchvisionDecoder):
    """A GPU-style decoder that fails on its n-th batch."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(torch.device("cpu"))
        self.fail_at = fail_at
        self.calls = 0

    def decode(self, samples: list) -> tuple[dict, int]:
        """Decode, or raise on the fail_at-th call."""
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(f"decoder failure on batch {self.calls}")
        return super().decode(samples)


def test_decoder_exception_reaches_the_consumer(shards: Path) -> None:
    loader = gpu_style_loader(shards, 2, decoder=FailingDecoder(fail_at=3))
    received = []
    with pytest.raises(OSError, match="decoder failure on batch 3"):
        for batch in loader:
            received.append(batch)
    assert len(received) == 2 and loader.stats()["batches"] == 2
    assert not live_prefetch_threads()


@pytest.mark.parametrize("workers", [0, 2])
def test_breaking_early_stops_the_thread(shards: Path, workers: int) -> None:
    loader = gpu_style_loader(shards, 1, workers=workers)
    for _batch in loader:
        break
    assert not live_prefetch_threads()
    assert loader.stats()["batches"] == 1


def test_prefetch_thread_stops_on_a_full_queue_and_closes_its_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            yield from itertools.count()
        finally:
            closed.set()

    outputs = prefetch_outputs(endless(), lambda item: item * 10, torch.device("cpu"), depth=2)
    assert [next(outputs) for _ in range(3)] == [0, 10, 20]
    outputs.close()
    assert closed.is_set() and not live_prefetch_threads()


def test_build_loader_prefetch_option(shards: Path) -> None:
    assert build_loader(shards, "train", (4,), BATCH, decode="cpu", device="cpu", num_workers=0).prefetch == 0
    assert gpu_style_loader(shards, 3).prefetch == 3 and gpu_style_loader(shards, None).prefetch == DEFAULT_PREFETCH
    with pytest.raises(ValueError, match="prefetch=-1"):
        build_loader(shards, "train", (4,), BATCH, decode="cpu", device="cpu", num_workers=0, prefetch=-1)
