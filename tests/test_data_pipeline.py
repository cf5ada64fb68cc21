"""build_loader on real tiny shards (cpu backend): layout, pixels, epochs, exactly-once evaluation, corrupt JPEGs."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_helpers import corrupt, make_videos, write_split

from common.distributed import reduce_counts
from data_pipeline import build_loader
from data_pipeline.augment import (
    IMAGENET_MEAN,
    IMAGENET_NORMALISATION,
    IMAGENET_STD,
    Normalisation,
    normalisation_tensors,
    normalise_views,
)
from data_pipeline.decode import DECODERS, CpuDecoder, Decoder, choose_backend, make_decoder
from data_pipeline.loader import batch_on_device, select_sample
from data_pipeline.options import PipelineConfig
from data_pipeline.stream import ShardDataError, iterate_tar, read_split

FRAME_COUNTS = (48, 30, 12, 4)
TRAIN_SHARD_SIZES = (9, 3, 7, 2, 6)
CORRUPT_ID = "c0002"


@pytest.fixture(scope="module")
def shards(tiny_shards: Callable[..., Path]) -> Path:
    """Uneven train shards (27 videos of 32x32), a 2-shard validation split of 40x32 frames, a corrupt split."""
    with_corrupt = make_videos(6, (20,), prefix="c")
    corrupt(with_corrupt[2])
    return tiny_shards(
        "pipeline_shards",
        train=(make_videos(27, FRAME_COUNTS), TRAIN_SHARD_SIZES),
        validation=(make_videos(11, FRAME_COUNTS, width=40, height=32, prefix="e"), (6, 5)),
        test=(with_corrupt, (6,)),
    )


def loader_for(shards: Path, **options):
    """build_loader with the small-image defaults of these tests."""
    settings = dict(
        shards=shards, split="train", frames=(4, 8, 16), batch_size=4, train=True, decode="cpu", device="cpu",
        num_workers=2, crop_size=24, test_resize=32, seed=0,
    )  # fmt: skip
    settings.update(options)
    return build_loader(**settings)


def test_training_batches_layout_and_count(shards: Path) -> None:
    loader = loader_for(shards)
    batches = list(loader)
    assert len(loader) == len(batches) == 27 // 4
    for batch in batches:
        assert set(batch["videos"]) == {4, 8, 16} and batch["views"] == 1
        for frames, videos in batch["videos"].items():
            assert videos.shape == (4, frames, 3, 24, 24) and videos.dtype == torch.float32
        assert batch["label"].dtype == torch.long and batch["label"].shape == (4,)
        assert len(batch["id"]) == 4
    stats = loader.stats()
    assert stats["samples"] == 24 and stats["batches"] == 6 and stats["corrupt_videos_replaced"] == 0
    assert stats["frames_decoded"] <= 24 * 28


def test_epochs_are_reproducible_and_differ(shards: Path) -> None:
    def order(epoch: int) -> list[str]:
        loader = loader_for(shards)
        loader.set_epoch(epoch)
        return [video for batch in loader for video in batch["id"]]

    first = order(0)
    assert order(0) == first
    assert order(1) != first


def test_eval_frames_are_the_exact_normalised_centre_crop(shards: Path) -> None:
    loader = loader_for(
        shards, split="validation", train=False, frames=(8,), batch_size=3, crop_size=32, test_resize=32
    )
    batch = next(iter(loader))
    video = make_videos(11, FRAME_COUNTS, width=40, height=32, prefix="e")[0]
    indices = [int(48 / 16 + 48 / 8 * index) for index in range(8)]
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(video["frames"][index]))) for index in indices])
    crop = torch.from_numpy(decoded[:, :, 4:36]).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert batch["id"][0] == "e0000"
    torch.testing.assert_close(batch["videos"][8][0], (crop - mean) / std, atol=1e-5, rtol=0)


def test_worker_uint8_batch_normalises_to_the_float_batch(shards: Path) -> None:
    """The cpu backend's workers hand over uint8; normalising it gives exactly the float path's batch."""
    config = PipelineConfig(frames=(4, 8), batch_size=4, train=True, crop_size=24, seed=5)
    shard = read_split(shards, "train")[0].path
    rng = np.random.default_rng(5)
    samples = [select_sample(raw, shard, config, rng) for raw in iterate_tar(shard)][:4]
    floats, _ = CpuDecoder(normalise=True).decode(samples)
    raw, _ = make_decoder("cpu", torch.device("cpu"), max_frames=0).decode(samples)  # what the loader's workers run
    mean, std = normalisation_tensors()
    for frames in (4, 8):
        assert raw["videos"][frames].dtype == torch.uint8 and raw["videos"][frames].shape == (4, frames, 3, 24, 24)
        assert torch.equal(normalise_views(raw["videos"][frames], mean, std), floats["videos"][frames])
    assert raw["id"] == floats["id"]
    on_device = batch_on_device(raw, torch.device("cpu"))  # the loader's last step, for every decoder
    assert all(torch.equal(on_device["videos"][frames], floats["videos"][frames]) for frames in (4, 8))
    assert batch_on_device(floats, torch.device("cpu"))["videos"][4] is floats["videos"][4]  # float: left as is


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_eval_sees_every_video_once(shards: Path, workers: int) -> None:
    loader = loader_for(shards, split="validation", train=False, batch_size=4, num_workers=workers)
    batches = list(loader)
    ids = [video for batch in batches for video in batch["id"]]
    assert sorted(ids) == [f"e{index:04d}" for index in range(11)]
    assert len(loader) == len(batches)
    assert reduce_counts([len(ids), 3.0]) == [11.0, 3.0]


def test_eval_multi_view_protocol(shards: Path) -> None:
    loader = loader_for(shards, split="validation", train=False, batch_size=2, test_crops=3, test_clips=2)
    batch = next(iter(loader))
    assert batch["views"] == 6
    assert batch["videos"][16].shape == (12, 16, 3, 24, 24)
    views = batch["videos"][16].view(2, 6, 16, 3, 24, 24)
    assert not torch.equal(views[0, 0], views[0, 1])  # left and right crops differ on textured frames


def test_corrupt_jpeg_is_replaced_by_a_good_video(shards: Path) -> None:
    loader = loader_for(shards, split="test", train=False, batch_size=3, num_workers=0)
    batches = list(loader)
    ids = [video for batch in batches for video in batch["id"]]
    assert CORRUPT_ID not in ids and len(ids) == 6
    assert Counter(ids).most_common(1)[0][1] == 2
    assert all(batch["videos"][4].shape[0] == 3 for batch in batches)
    assert loader.stats()["corrupt_videos_replaced"] == 1


def test_few_shards_many_workers_train_and_eval(shards: Path) -> None:
    loader = loader_for(shards, split="validation", train=False, batch_size=2, num_workers=4, frames=(4,))
    batches = list(loader)
    assert sorted(video for batch in batches for video in batch["id"]) == [f"e{index:04d}" for index in range(11)]
    assert len(loader) == len(batches) == 7  # 2 shards, 4 workers: samples 3, 3, 3, 2 -> 2, 2, 2, 1 batches
    training = loader_for(shards, split="validation", batch_size=2, num_workers=3, frames=(4,))
    assert len(list(training)) == len(training) == 5


def test_bad_input_gives_clear_errors(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ShardDataError, match="no manifest"):
        loader_for(tmp_path)
    with pytest.raises(ValueError, match="no full batch"):
        loader_for(shards, split="test", batch_size=8)
    with pytest.raises(ValueError, match="CUDA"):
        loader_for(shards, decode="torchvision")
    with pytest.raises(ValueError, match="unknown option.*'crop'"):
        loader_for(shards, crop=24)
    with pytest.raises(ValueError, match="tar_reader"):
        loader_for(shards, tar_reader="tarfile")
    assert choose_backend("auto", torch.device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="decode"):
        choose_backend("opencv", torch.device("cpu"))


def test_registry_backends_follow_the_decoder_protocol() -> None:
    """Every registered backend builds on the CPU and says where it runs; only cpu runs in the workers."""
    for name in DECODERS:
        decoder = make_decoder(name, torch.device("cpu"), max_frames=8)
        assert isinstance(decoder, Decoder) and decoder.name == name
        assert decoder.in_worker == (name == "cpu") and decoder.needs_cuda == (name != "cpu")
    assert list(DECODERS)[-1] == "cpu"  # "auto" ends at the backend every device allows


def test_loader_batches_arrive_on_its_device_as_normalised_floats(shards: Path) -> None:
    loader = loader_for(shards, split="validation", train=False, batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert loader.backend == "cpu" and loader.device == torch.device("cpu") and loader.pin_memory is False
    assert all(frames.dtype == torch.float32 and frames.device == loader.device for frames in batch["videos"].values())


def test_training_fills_every_worker_quota_despite_empty_shards(tmp_path: Path) -> None:
    write_split(tmp_path, "train", make_videos(8, (12,)), (0, 5, 0, 3))
    loader = loader_for(tmp_path, batch_size=2, num_workers=4, frames=(4,))
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and all(len(batch["id"]) == 2 for batch in batches)


def test_a_model_s_normalisation_and_channel_order_reach_every_batch(shards: Path) -> None:
    """A BGR model with mean 0.45 / std 0.225 gets the same pixels, its own normalisation, channels reversed."""
    slowfast_like = Normalisation(mean=(0.45, 0.45, 0.40), std=(0.225, 0.225, 0.2), channel_order="BGR")
    batches = {}
    for name, normalisation in (("imagenet", IMAGENET_NORMALISATION), ("bgr", slowfast_like)):
        loader = loader_for(shards, train=False, num_workers=0, normalisation=normalisation)
        batches[name] = next(iter(loader))
    imagenet, bgr = batches["imagenet"]["videos"][8], batches["bgr"]["videos"][8]
    pixels = imagenet * torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255 + torch.tensor(IMAGENET_MEAN).view(
        1, 1, 3, 1, 1) * 255
    rgb_mean = torch.tensor((0.40, 0.45, 0.45)).view(1, 1, 3, 1, 1) * 255
    rgb_std = torch.tensor((0.2, 0.225, 0.225)).view(1, 1, 3, 1, 1) * 255
    expected = ((pixels - rgb_mean) / rgb_std).flip(2)
    torch.testing.assert_close(bgr, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(bgr, imagenet)
    with pytest.raises(ValueError, match="channel_order"):
        Normalisation(channel_order="GBR")
