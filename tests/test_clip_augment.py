"""Clip augmentation from timm's blocks (data_pipeline.clip_augment): one RandAugment draw per view, one erased box
and one mixup / cutmix for all frames and frame counts of a clip, the global random state left alone, and the same
augmented batches from the worker-side (cpu) and main-process (torchvision) decoders."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import make_videos

from data_pipeline import build_loader
from data_pipeline.clip_augment import BatchAugment, ClipRandAugment, check_rand_augment
from data_pipeline.decode import TorchvisionDecoder
from data_pipeline.loader import STATS_KEYS

OFFICIAL_RAND_AUGMENT = "rand-m7-n4-mstd0.5-inc1"
NUM_CLASSES = 5
FRAME_COUNTS = (4, 8, 16)


def global_states() -> tuple:
    """Python's, NumPy's and torch's CPU generator states."""
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()


def assert_same_states(before: tuple, after: tuple) -> None:
    """The global generators are where they were."""
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and torch.equal(before[2], after[2])


def clip_frames(count: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 frames (count, 3, size, size) of random content."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


def test_rand_augment_applies_one_draw_to_every_frame_and_leaves_the_global_state_alone() -> None:
    augment = ClipRandAugment(OFFICIAL_RAND_AUGMENT, 32)
    frames = clip_frames()
    before = global_states()
    changed = 0
    for seed in range(6):
        augmented = augment(frames, seed)
        assert augmented.shape == frames.shape and augmented.dtype == torch.uint8
        for index in range(frames.shape[0]):  # frame by frame, the same seed gives the same frame
            assert torch.equal(augment(frames[index:index + 1], seed)[0], augmented[index])
        assert torch.equal(augment(frames, seed), augmented)
        changed += int(not torch.equal(augmented, frames))
    assert changed >= 4  # four operations per draw: the views do change
    assert not torch.equal(augment(frames, 0), augment(frames, 1))
    identical = frames[:1].repeat(4, 1, 1, 1)
    out = augment(identical, 3)
    assert all(torch.equal(out[0], out[index]) for index in range(4))
    assert_same_states(before, global_states())


def test_rand_augment_configuration_is_checked() -> None:
    check_rand_augment(OFFICIAL_RAND_AUGMENT)
    with pytest.raises(ValueError, match="RandAugment configuration"):
        check_rand_augment("autoaugment-v0")


def clips(count: int = 4, size: int = 8) -> dict[int, torch.Tensor]:
    """Normalised-looking float clips {T: (count, T, 3, size, size)}."""
    generator = torch.Generator().manual_seed(7)
    return {frames: torch.randn(count, frames, 3, size, size, generator=generator) for frames in FRAME_COUNTS}


def spatial_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per (frame, channel) the (H, W) mask of changed pixels, for one clip (T, 3, H, W)."""
    return (before != after).flatten(0, 1)


def test_mixup_weights_every_frame_and_frame_count_of_a_clip_alike() -> None:
    videos = clips()
    labels = torch.arange(4)
    augment = BatchAugment(NUM_CLASSES, seed=1, mixup=0.8)
    before = global_states()
    mixed, targets = augment({frames: tensor.clone() for frames, tensor in videos.items()}, labels, (0, 0, 0))
    assert_same_states(before, global_states())
    assert targets.shape == (4, NUM_CLASSES) and torch.allclose(targets.sum(1), torch.ones(4))
    for clip in range(4):
        weight = float(targets[clip, clip])
        partner = 3 - clip  # timm pairs a batch with its reverse
        assert 0.0 < weight < 1.0 and float(targets[clip, partner]) == pytest.approx(1 - weight)
        for frames in FRAME_COUNTS:
            expected = weight * videos[frames][clip] + (1 - weight) * videos[frames][partner]
            assert torch.allclose(mixed[frames][clip], expected, atol=1e-6)
            assert mixed[frames].is_contiguous()


def test_cutmix_pastes_one_box_through_all_frames_and_frame_counts() -> None:
    videos = clips(size=16)
    augment = BatchAugment(NUM_CLASSES, seed=3, cutmix=1.0)
    mixed, targets = augment({frames: tensor.clone() for frames, tensor in videos.items()}, torch.arange(4),
                             (1, 2, 0))
    box = None
    for frames in FRAME_COUNTS:
        for clip in range(4):
            changed = spatial_change(videos[frames][clip], mixed[frames][clip])
            assert all(torch.equal(changed[0], plane) for plane in changed)  # the same box in every frame
            box = changed[0] if box is None else box
            assert torch.equal(box, changed[0])  # and in every clip and frame count
            pasted = mixed[frames][clip][..., box]
            assert torch.equal(pasted, videos[frames][3 - clip][..., box])
    area = float(box.float().mean())
    assert 0 < area < 1 and float(targets[0, 0]) == pytest.approx(1 - area)  # cutmix's corrected weight


def test_erasing_fills_one_box_through_all_frames_with_per_pixel_noise() -> None:
    videos = clips(size=16)
    augment = BatchAugment(NUM_CLASSES, seed=0, erasing=1.0)
    erased, targets = augment({frames: tensor.clone() for frames, tensor in videos.items()}, torch.arange(4),
                              (0, 1, 0))
    assert torch.equal(targets, torch.eye(NUM_CLASSES)[:4])  # no mixing, no smoothing: one-hot targets
    for clip in range(4):
        boxes = [spatial_change(videos[frames][clip], erased[frames][clip]) for frames in FRAME_COUNTS]
        first = boxes[0][0]
        assert first.any() and all(torch.equal(first, plane) for planes in boxes for plane in planes)
        values = erased[16][clip][..., first]
        assert not torch.equal(values[0], values[1])  # per-pixel noise differs between frames


def test_the_same_key_gives_the_same_batch_and_another_key_another() -> None:
    augment = BatchAugment(NUM_CLASSES, seed=5, erasing=0.5, mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    runs = [augment({frames: tensor.clone() for frames, tensor in clips().items()}, torch.arange(4), key)
            for key in ((0, 0, 0), (0, 0, 0), (0, 0, 1))]
    assert all(torch.equal(runs[0][0][frames], runs[1][0][frames]) for frames in FRAME_COUNTS)
    assert torch.equal(runs[0][1], runs[1][1])
    assert not all(torch.equal(runs[0][0][frames], runs[2][0][frames]) for frames in FRAME_COUNTS)
    other_rank = BatchAugment(NUM_CLASSES, seed=5, rank=1, erasing=0.5, mixup=0.8, cutmix=1.0)
    moved, _ = other_rank({frames: tensor.clone() for frames, tensor in clips().items()}, torch.arange(4), (0, 0, 0))
    assert not all(torch.equal(runs[0][0][frames], moved[frames]) for frames in FRAME_COUNTS)


def test_label_smoothing_alone_gives_smoothed_one_hot_targets_and_leaves_the_clips() -> None:
    videos = clips()
    augment = BatchAugment(NUM_CLASSES, label_smoothing=0.1)
    out, targets = augment({frames: tensor.clone() for frames, tensor in videos.items()}, torch.tensor([2, 0, 1, 4]),
                           (0, 0, 0))
    assert all(torch.equal(out[frames], videos[frames]) for frames in FRAME_COUNTS)
    assert targets[0, 2] == pytest.approx(0.9 + 0.1 / NUM_CLASSES) and targets[0, 1] == pytest.approx(0.02)
    assert augment.active and not BatchAugment(NUM_CLASSES).active


@pytest.fixture(scope="module")
def shards(tiny_shards: Callable[..., Path]) -> Path:
    """A train split of 8 videos of 32x32 (20 and 33 frames) in 2 shards."""
    return tiny_shards("clip_augment_shards", train=(make_videos(8, (20, 33), prefix="a"), (4, 4)))


def augmented_loader(shards: Path, main_process: bool, views: int = 2):
    """A train loader with RandAugment and two views per video: cpu decoding in the worker, or the torchvision
    decoder in the main process (on the CPU)."""
    loader = build_loader(shards, "train", (4, 8), 2, train=True, decode="cpu", device="cpu", num_workers=1,
                          crop_size=24, seed=4, rand_augment=OFFICIAL_RAND_AUGMENT, train_views=views,
                          train_crop="random-resized", prefetch=0)
    if not main_process:
        return loader
    return dataclasses.replace(loader, decoder=TorchvisionDecoder(torch.device("cpu")),
                               totals={key: 0 for key in STATS_KEYS},
                               rand_augment=ClipRandAugment(OFFICIAL_RAND_AUGMENT, 24))


def test_worker_and_main_process_decoders_give_the_same_augmented_batches(shards: Path) -> None:
    worker = list(augmented_loader(shards, main_process=False))
    main = list(augmented_loader(shards, main_process=True))
    assert len(worker) == len(main) == 4
    for left, right in zip(worker, main):
        assert left["id"] == right["id"] and left["views"] == right["views"] == 2
        assert "augment_seeds" not in left and "augment_seeds" not in right
        for frames in (4, 8):
            assert left["videos"][frames].shape == (4, frames, 3, 24, 24)
            assert torch.equal(left["videos"][frames], right["videos"][frames])
    first = worker[0]["videos"][8]
    assert not torch.equal(first[0], first[1])  # the two views of a video differ
