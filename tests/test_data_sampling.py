"""Pure sampling and crop-box rules of data_pipeline (official TSN/TSM/FFN facts, our options)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline import build_loader
from data_pipeline.augment import (
    FIXED_OFFSET_STEPS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropBox,
    choose_boxes,
    crop_frames,
    crop_resize,
    default_test_resize,
    eval_boxes,
    multi_scale_box,
    normalisation_tensors,
    normalise_views,
    resize,
    video_views,
)
from data_pipeline.sampling import (
    eval_clip_fractions,
    eval_indices,
    indices_by_frames,
    plan_frames,
    sample_indices,
    train_indices,
)


@pytest.mark.parametrize("num_frames, num_segments", [(48, 16), (48, 8), (50, 4), (16, 16), (17, 8)])
def test_train_indices_one_random_frame_per_segment(num_frames: int, num_segments: int) -> None:
    rng = np.random.default_rng(0)
    segment = num_frames // num_segments
    seen = set()
    for _ in range(200):
        indices = train_indices(num_frames, num_segments, rng)
        assert indices.shape == (num_segments,) and indices.dtype == np.int64
        assert np.all(indices // segment == np.arange(num_segments)), indices
        seen.update((indices % segment).tolist())
    assert seen == set(range(segment)), "every offset inside a segment is reachable"


def test_eval_indices_are_official_segment_centres() -> None:
    assert eval_indices(48, 16).tolist() == [1 + 3 * index for index in range(16)]
    assert eval_indices(10, 4).tolist() == [1, 3, 6, 8]  # int(1.25 + 2.5 i)
    assert eval_indices(45, 8).tolist() == [int(45 / 16 + 45 / 8 * index) for index in range(8)]
    assert eval_indices(48, 16, clip_fraction=0.0).tolist() == [3 * index for index in range(16)]


def test_official_short_video_rules_and_quirks() -> None:
    rng = np.random.default_rng(1)
    assert train_indices(10, 16, rng).tolist() == [0] * 16  # n < T: the first frame repeated
    assert train_indices(16, 16, rng).tolist() == list(range(16))  # n == T in training: avg = 1, every frame
    assert eval_indices(16, 16).tolist() == [0] * 16  # quirk: n == T at test time is also all zeros
    assert eval_indices(5, 8).tolist() == [0] * 8


def test_spread_short_video_rule_spreads_evenly() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        indices = train_indices(10, 16, rng, short_video="spread")
        assert np.all(np.diff(indices) >= 0) and indices.min() >= 0 and indices.max() < 10
        assert set(indices.tolist()) == set(range(10))
        assert np.bincount(indices).max() <= 2
    assert eval_indices(16, 16, short_video="spread").tolist() == list(range(16))
    assert eval_indices(8, 16, short_video="spread").tolist() == sorted(list(range(8)) * 2)


def test_segments_rule_is_tsm_test_script_for_every_length() -> None:
    """TSM's test script (no short-video branch): int(tick / 2 + tick * i), then int(tick * i) for twice_sample."""
    rng = np.random.default_rng(3)
    for num_segments in (1, 4, 7, 8, 14, 16):
        for num_frames in range(1, 3 * num_segments + 2):
            tick = num_frames / float(num_segments)
            centre = [int(tick / 2.0 + tick * index) for index in range(num_segments)]
            start = [int(tick * index) for index in range(num_segments)]
            assert eval_indices(num_frames, num_segments, "segments").tolist() == centre
            assert eval_indices(num_frames, num_segments, "segments", clip_fraction=0.0).tolist() == start
    assert eval_indices(4, 14, "segments").tolist() != eval_indices(4, 14, "spread").tolist()  # float rounding
    assert eval_indices(5, 8, "segments").tolist() == [0, 0, 1, 2, 2, 3, 4, 4]
    with pytest.raises(ValueError, match="segments is a test-only rule; use official or spread"):
        train_indices(10, 16, rng, short_video="segments")
    with pytest.raises(ValueError, match="test-only"):  # refused before any shard is read
        build_loader("no-such-folder", "train", (8,), 1, train=True, short_video="segments")
    two_clips = plan_frames(6, (8,), False, short_video="segments", num_clips=2)
    assert [two_clips.unique[clip[8]].tolist() for clip in two_clips.positions] == [
        [0, 1, 1, 2, 3, 4, 4, 5], [0, 0, 1, 2, 3, 3, 4, 5]
    ]


def test_sample_indices_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="rng"):
        sample_indices(48, 8, train=True)
    with pytest.raises(ValueError, match="num_frames"):
        sample_indices(0, 8, train=False)
    with pytest.raises(ValueError, match="short_video"):
        sample_indices(48, 8, train=False, short_video="stretch")


def test_independent_rates_are_sampled_separately() -> None:
    rng = np.random.default_rng(3)
    subset_every_time = True
    for _ in range(50):
        sets = indices_by_frames(48, (4, 8, 16), True, rng)
        assert {rate: len(indices) for rate, indices in sets.items()} == {4: 4, 8: 8, 16: 16}
        subset_every_time &= set(sets[4].tolist()) <= set(sets[16].tolist())
    assert not subset_every_time, "independent sampling must not nest the 4-frame set in the 16-frame set"


@pytest.mark.parametrize("train", [True, False])
def test_nested_rates_come_from_the_largest_set(train: bool) -> None:
    rng = np.random.default_rng(4)
    for num_frames in (48, 20, 9):
        sets = indices_by_frames(num_frames, (4, 8, 16), train, rng, sampling="nested")
        for rate in (4, 8):
            assert set(sets[rate].tolist()) <= set(sets[16].tolist())
            assert np.all(np.diff(sets[rate]) >= 0)
        plan = plan_frames(num_frames, (4, 8, 16), train, rng, sampling="nested")
        assert len(plan.unique) <= 16


def test_nested_takes_one_frame_per_group() -> None:
    sets = indices_by_frames(48, (4, 16), False, None, sampling="nested")
    assert sets[4].tolist() == [sets[16][position] for position in (2, 6, 10, 14)]


def test_plan_frames_decodes_each_frame_once_and_maps_back() -> None:
    rng = np.random.default_rng(5)
    plan = plan_frames(48, (4, 8, 16), True, rng)
    assert np.all(np.diff(plan.unique) > 0)
    assert len(plan.positions) == 1
    rebuilt = {rate: plan.unique[positions] for rate, positions in plan.positions[0].items()}
    replay = indices_by_frames(48, (4, 8, 16), True, np.random.default_rng(5))
    for rate in (4, 8, 16):
        assert rebuilt[rate].tolist() == replay[rate].tolist()
    two_clips = plan_frames(48, (8,), False, None, num_clips=2)
    assert [clip[8].tolist() for clip in two_clips.positions] != [two_clips.positions[0][8].tolist()] * 2
    assert eval_clip_fractions(2) == [0.5, 0.0]


def test_multi_scale_box_follows_the_official_recipe() -> None:
    rng = np.random.default_rng(6)
    width, height, crop = 427, 240, 224
    sides = {240, 210, 180, 158}
    offsets = set()
    for _ in range(2000):
        box = multi_scale_box(width, height, crop, rng, flip=False)
        assert box.width in sides and box.height in sides
        assert abs(sorted(sides, reverse=True).index(box.width) - sorted(sides, reverse=True).index(box.height)) <= 1
        assert 0 <= box.x <= width - box.width and 0 <= box.y <= height - box.height
        assert (box.out_width, box.out_height, box.flip) == (crop, crop, False)
        column_step, row_step = (width - box.width) // 4, (height - box.height) // 4
        if column_step > 0 and row_step > 0:
            assert box.x % column_step == 0 and box.y % row_step == 0
            offsets.add((box.x // column_step, box.y // row_step))
    factors = offsets
    assert factors <= set(FIXED_OFFSET_STEPS) and len(factors) == 13


def test_multi_scale_snaps_sides_near_the_crop_size() -> None:
    rng = np.random.default_rng(7)
    widths = {multi_scale_box(300, 256, 224, rng, flip=False).width for _ in range(500)}
    assert 224 in widths  # int(256 * .875) = 224; int(256 * .75) = 192; 256 and 168 stay
    widths = {multi_scale_box(300, 226, 224, rng, flip=False).width for _ in range(500)}
    assert 224 in widths and 226 not in widths  # 226 is within 3 px of 224: snapped


def test_eval_boxes_follow_the_official_test_crops() -> None:
    # 455x256 (what `make shards` and the official extraction write): GroupScale(256) is the identity.
    (centre,) = eval_boxes(455, 256, 224, 256)
    assert (centre.x, centre.y, centre.width, centre.out_width) == (116, 16, 224, 224)  # round(115.5) = 116
    three = eval_boxes(455, 256, 224, 256, num_crops=3)  # GroupFullResSample: left, right, centre; step 231 // 4
    assert [(box.x, box.y) for box in three] == [(0, 16), (228, 16), (114, 16)]
    full_res = eval_boxes(455, 256, 256, 256, num_crops=3)
    assert [(box.x, box.y, box.width) for box in full_res] == [(0, 0, 256), (196, 0, 256), (98, 0, 256)]
    assert (eval_boxes(455, 256, 256, 256)[0].x, eval_boxes(454, 256, 224, 256)[0].x) == (100, 115)  # half to even
    tall = eval_boxes(256, 455, 224, 256, num_crops=3)  # the official steps on both axes, not "along the long side"
    assert [(box.x, box.y) for box in tall] == [(0, 114), (32, 114), (16, 114)]
    # 427x240: resized to 455x256 first; the origin maps back to stored pixels, the box has side 224 * 240 / 256.
    (stored,) = eval_boxes(427, 240, 224, 256)
    assert (stored.x, stored.y, stored.width, stored.out_width) == (109, 15, 210, 224)
    with pytest.raises(ValueError, match="test_crops"):
        eval_boxes(427, 240, 224, 256, num_crops=2)
    assert default_test_resize(224) == 256 and default_test_resize(32) == 36  # official crop * 256 // 224
    assert choose_boxes(40, 32, False, 32, None, None)[0].width == 28  # default resize 36: round(32 * 32 / 36)


def test_demo_frames_take_the_same_box_before_and_after_the_official_rounding() -> None:
    """The demo (32x32 frames, crop 32, test resize 32) evaluates the whole frame under either rounding."""
    width = height = 32  # scripts/demo.py's stored frames
    crop_size = test_resize = 32  # train.py --preset demo
    assert test_resize == min(width, height)  # so the resized frame is the stored frame under either rule
    old_rule_box = ((width - crop_size) // 2, (height - crop_size) // 2, crop_size, crop_size)  # floor halving
    (box,) = eval_boxes(width, height, crop_size, test_resize)
    assert (box.x, box.y, box.width, box.height) == old_rule_box


def test_crop_resize_is_exact_without_scaling_and_mirrors() -> None:
    frames = torch.randint(0, 256, (3, 3, 20, 30), dtype=torch.uint8)
    box = CropBox(5, 2, 16, 16, 16, 16, flip=True)
    assert torch.equal(crop_resize(frames, box), frames[:, :, 2:18, 5:21].float().flip(-1))


def test_uint8_resize_on_cpu_stays_within_one_level_of_float_bilinear() -> None:
    frames = torch.randint(0, 256, (4, 3, 60, 80), dtype=torch.uint8)
    for box in (CropBox(3, 1, 57, 50, 24, 24), CropBox(0, 0, 20, 20, 48, 48)):
        fast = crop_resize(frames, box)
        region = frames[:, :, box.y : box.y + box.height, box.x : box.x + box.width].float()
        exact = torch.nn.functional.interpolate(region, size=(box.out_height, box.out_width), mode="bilinear")
        assert (fast - exact).abs().max() <= 1.0 + 1e-3


def test_channels_last_frames_crop_and_resize_to_the_same_pixels() -> None:
    """Decoder output ((3, H, W) views of (H, W, 3) memory) takes the fast path with bit-identical results."""
    planar = torch.randint(0, 256, (5, 3, 60, 80), dtype=torch.uint8)
    interleaved = [frame.permute(1, 2, 0).contiguous().permute(2, 0, 1) for frame in planar]
    assert interleaved[0].stride(0) == 1 and planar[0].stride(2) == 1
    for box in (CropBox(3, 1, 57, 50, 24, 24), CropBox(10, 4, 30, 30, 64, 64, flip=True)):
        fast = resize(crop_frames(interleaved, [4, 0, 2], box), box)
        reference = resize(crop_frames(list(planar), [4, 0, 2], box), box)
        assert fast.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(fast, reference)


@pytest.mark.parametrize("frame_count", [1, 6, 9])
def test_normalise_views_matches_the_official_formula_in_every_chunk(frame_count: int) -> None:
    """Channels-last uint8 frames, a frame count that leaves a partial last chunk: every frame normalised."""
    pixels = torch.randint(0, 256, (frame_count, 20, 24, 3), dtype=torch.uint8)
    frames = pixels.permute(0, 3, 1, 2).unsqueeze(0)  # (1, T, 3, H, W) view of channels-last memory
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mean_255, std_255 = normalisation_tensors()
    output = normalise_views(frames, mean_255, std_255)
    assert output.is_contiguous() and output.dtype == torch.float32
    torch.testing.assert_close(output[0], (frames[0].float() / 255.0 - mean) / std, atol=2e-6, rtol=0)
    whole = torch.empty(frames.shape).copy_(frames).sub_(mean_255).div_(std_255)  # one pass over every frame
    assert torch.equal(output, whole)  # chunking changes no number, so training results stay reproducible


def test_one_crop_shared_by_every_frame_and_rate() -> None:
    rng = np.random.default_rng(8)
    image = torch.randint(0, 256, (1, 3, 40, 56), dtype=torch.uint8)
    plan = plan_frames(48, (4, 8, 16), True, rng)
    frames = list(image.repeat(len(plan.unique), 1, 1, 1))
    boxes = choose_boxes(56, 40, True, 24, None, rng)
    mean, std = normalisation_tensors()
    views = video_views(frames, boxes, plan.positions, mean, std)
    reference = views[16][0, 0]
    for rate in (4, 8, 16):
        assert views[rate].shape == (1, rate, 3, 24, 24)
        assert torch.equal(views[rate][0], reference.expand(rate, -1, -1, -1))
