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
    Normalisation,
    allocate_views,
    choose_boxes,
    crop_frames,
    crop_resize,
    default_test_resize,
    eval_boxes,
    multi_scale_box,
    normalisation_tensors,
    normalise_views,
    render_views,
    resize,
    shared_empty,
    video_views,
)
from data_pipeline.sampling import (
    eval_clip_fractions,
    eval_indices,
    indices_by_frames,
    nested_positions,
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
        assert {frames: len(indices) for frames, indices in sets.items()} == {4: 4, 8: 8, 16: 16}
        subset_every_time &= set(sets[4].tolist()) <= set(sets[16].tolist())
    assert not subset_every_time, "independent sampling must not nest the 4-frame set in the 16-frame set"


@pytest.mark.parametrize("train", [True, False])
def test_nested_rates_come_from_the_largest_set(train: bool) -> None:
    rng = np.random.default_rng(4)
    for num_frames in (48, 20, 9):
        sets = indices_by_frames(num_frames, (4, 8, 16), train, rng, sampling="nested")
        for frames in (4, 8):
            assert set(sets[frames].tolist()) <= set(sets[16].tolist())
            assert np.all(np.diff(sets[frames]) >= 0)
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
    rebuilt = {frames: plan.unique[positions] for frames, positions in plan.positions[0].items()}
    replay = indices_by_frames(48, (4, 8, 16), True, np.random.default_rng(5))
    for frames in (4, 8, 16):
        assert rebuilt[frames].tolist() == replay[frames].tolist()
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


# The 13 fixed offsets of TSN's GroupMultiScaleCrop, as (column, row) multiples of the quarter steps.
OFFICIAL_OFFSETS = (
    (0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3),
)  # fmt: skip
# (width, height, crop) -> the (crop width, crop height) pairs the official recipe allows, worked out by hand:
# sides int(short * s) for s in (1, .875, .75, .66), a side within 3 px of the crop snapped to it, a width and a
# height whose scale indices differ by at most 1, then clamped to the frame.
OFFICIAL_PAIRS = {
    # short 256: 256, 224, 192, int(168.96) = 168
    (340, 256, 224): {(256, 256), (224, 256), (256, 224), (224, 224), (192, 224), (224, 192), (192, 192),
                      (168, 192), (192, 168), (168, 168)},
    # short 40: 40, 35, 30 -> snapped to 32, int(26.4) = 26
    (48, 40, 32): {(40, 40), (35, 40), (40, 35), (35, 35), (32, 35), (35, 32), (32, 32), (26, 32), (32, 26),
                   (26, 26)},
    # portrait, short 222: 222 -> snapped to 224 then clamped to the 222 px width, 194, 166, int(146.52) = 146
    (222, 300, 224): {(222, 224), (194, 224), (222, 194), (194, 194), (166, 194), (194, 166), (166, 166),
                      (146, 166), (166, 146), (146, 146)},
}
MULTI_SCALE_DRAWS = 6000


@pytest.mark.parametrize("width, height, crop", sorted(OFFICIAL_PAIRS))
def test_multi_scale_crop_draws_exactly_the_official_sizes_and_offsets(width: int, height: int, crop: int) -> None:
    rng = np.random.default_rng(12)
    drawn = [choose_boxes(width, height, True, crop, None, rng, multi_scale=True)[0] for _ in range(MULTI_SCALE_DRAWS)]
    pairs = OFFICIAL_PAIRS[(width, height, crop)]
    expected = {
        (column * ((width - pair_width) // 4), row * ((height - pair_height) // 4), pair_width, pair_height)
        for pair_width, pair_height in pairs
        for column, row in OFFICIAL_OFFSETS
    }
    assert {(box.x, box.y, box.width, box.height) for box in drawn} == expected
    assert {(box.out_width, box.out_height, box.flip) for box in drawn} == {(crop, crop, False)}
    # every pair, and every offset of a pair, equally likely (10 pairs, 13 offsets)
    pair_share = np.array([sum((box.width, box.height) == pair for box in drawn) for pair in sorted(pairs)])
    assert np.all(np.abs(pair_share / MULTI_SCALE_DRAWS - 1 / len(pairs)) < 0.025), pair_share


def test_multi_scale_crop_offsets_are_uniform_and_flip_is_a_coin() -> None:
    rng = np.random.default_rng(13)
    width, height, crop = 340, 256, 224
    drawn = [choose_boxes(width, height, True, crop, None, rng, flip=True)[0] for _ in range(MULTI_SCALE_DRAWS)]
    smallest = [box for box in drawn if (box.width, box.height) == (168, 168)]  # steps 43 and 22: 13 distinct
    offsets = [(box.x // 43, box.y // 22) for box in smallest]
    assert set(offsets) == set(OFFICIAL_OFFSETS)
    counts = np.array([offsets.count(offset) for offset in OFFICIAL_OFFSETS])
    assert np.all(np.abs(counts / len(offsets) - 1 / 13) < 0.04), counts
    assert 0.45 < np.mean([box.flip for box in drawn]) < 0.55


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
    images = list(image.repeat(len(plan.unique), 1, 1, 1))
    boxes = choose_boxes(56, 40, True, 24, None, rng)
    mean, std = normalisation_tensors()
    views = video_views(images, boxes, plan.positions, mean, std)
    reference = views[16][0, 0]
    for frames in (4, 8, 16):
        assert views[frames].shape == (1, frames, 3, 24, 24)
        assert torch.equal(views[frames][0], reference.expand(frames, -1, -1, -1))


@pytest.mark.parametrize("width, height, crop, resize_to, side", [
    (48, 40, 32, 36, 36),   # round(32 * 40 / 36) = 36: x in 0..12, y in 0..4
    (40, 32, 32, 32, 32),   # stored at the resize: the crop itself, x in 0..8, y 0
    (32, 48, 32, 16, 32),   # round(32 * 32 / 16) = 64 is clamped to the 32 px short side
    (6, 5, 2, 100, 1),      # round(2 * 5 / 100) = 0 is raised to one pixel
])
def test_random_resized_crop_takes_every_position_of_its_side(width, height, crop, resize_to, side) -> None:
    rng = np.random.default_rng(14)
    drawn = [choose_boxes(width, height, True, crop, resize_to, rng, multi_scale=False, flip=True)[0]
             for _ in range(3000)]
    assert {(box.width, box.height, box.out_width, box.out_height) for box in drawn} == {(side, side, crop, crop)}
    positions = [(box.x, box.y) for box in drawn]
    grid = {(x, y) for x in range(width - side + 1) for y in range(height - side + 1)}
    assert set(positions) == grid
    shares = np.array([positions.count(cell) for cell in sorted(grid)]) / len(positions)
    assert np.all(np.abs(shares - 1 / len(grid)) < 0.35 / len(grid)), shares  # uniform over the grid
    assert 0.45 < np.mean([box.flip for box in drawn]) < 0.55
    unflipped = choose_boxes(width, height, True, crop, resize_to, rng, multi_scale=False)
    assert len(unflipped) == 1 and not unflipped[0].flip


def test_training_crops_need_an_rng() -> None:
    with pytest.raises(ValueError, match="need an rng"):
        choose_boxes(40, 32, True, 32, None, None)
    with pytest.raises(ValueError, match="need an rng"):
        choose_boxes(40, 32, True, 32, None, None, multi_scale=False)


def test_views_layout_and_uint8_path_equal_the_float_path() -> None:
    """Two videos of 2 clips x 3 crops: view = clip * 3 + crop; uint8 outputs normalise to the float outputs."""
    eval_frames, views, size = (2, 5), 6, 24
    mean, std = normalisation_tensors()
    float_outputs = allocate_views(eval_frames, 2, views, (size, size))
    uint8_outputs = allocate_views(eval_frames, 2, views, (size, size), dtype=torch.uint8)
    for frames in eval_frames:
        assert float_outputs[frames].shape == uint8_outputs[frames].shape == (2 * views, frames, 3, size, size)
        assert float_outputs[frames].is_contiguous() and float_outputs[frames].dtype == torch.float32
        assert uint8_outputs[frames].dtype == torch.uint8 and uint8_outputs[frames].stride()[2] == 1  # channels last
        assert uint8_outputs[frames].permute(0, 1, 3, 4, 2).is_contiguous()
        assert not float_outputs[frames].is_shared() and not uint8_outputs[frames].is_shared()  # not in a worker
    generator = torch.Generator().manual_seed(3)
    for video, num_frames in enumerate((20, 7)):
        plan = plan_frames(num_frames, eval_frames, False, None, short_video="spread", num_clips=2)
        images = [torch.randint(0, 256, (36, 44, 3), dtype=torch.uint8, generator=generator).permute(2, 0, 1)
                  for _ in plan.unique]  # (3, H, W) views of (H, W, 3) data, as the JPEG decoders return them
        boxes = eval_boxes(44, 36, size, 28, num_crops=3)
        rows = slice(video * views, (video + 1) * views)
        render_views(images, boxes, plan.positions, mean, std, {frames: float_outputs[frames][rows] for frames in eval_frames})
        render_views(images, boxes, plan.positions, mean, std, {frames: uint8_outputs[frames][rows] for frames in eval_frames})
        for clip, positions in enumerate(plan.positions):
            for crop, box in enumerate(boxes):
                for frames in eval_frames:
                    chosen = torch.stack([images[int(position)] for position in positions[frames]])
                    expected = (crop_resize(chosen, box) - mean) / std
                    assert torch.equal(float_outputs[frames][video * views + clip * 3 + crop], expected)
    for frames in eval_frames:
        assert torch.equal(normalise_views(uint8_outputs[frames], mean, std), float_outputs[frames])


def test_shared_empty_gives_shared_memory_of_the_shape_and_type() -> None:
    for shape, dtype in [((2, 3, 4), torch.float32), ((5,), torch.uint8), ((0, 3), torch.float32)]:
        tensor = shared_empty(shape, dtype)
        assert tensor.is_shared() and tensor.shape == shape and tensor.dtype == dtype
        assert tensor.untyped_storage().nbytes() == int(np.prod(shape)) * tensor.element_size()
        tensor.fill_(7)
        assert torch.all(tensor == 7)


def test_test_crops_stay_inside_the_frame_and_follow_the_chosen_resize() -> None:
    # 116x118 at resize 256: 256x260, steps 8 and 9, side round(224 * 116 / 256) = round(101.5) = 102; the right
    # crop's origin 32 maps to floor(32 * 116 / 256 + 0.5) = 15, one pixel past 116 - 102 = 14: kept inside
    boxes = choose_boxes(116, 118, False, 224, 256, None, test_crops=3)
    assert boxes == [CropBox(0, 8, 102, 102, 224, 224), CropBox(14, 8, 102, 102, 224, 224),
                     CropBox(7, 8, 102, 102, 224, 224)]
    # an explicit test resize (40, not the default 36): 50x40, centre (9, 4), side round(32 * 32 / 40) = 26
    assert choose_boxes(40, 32, False, 32, 40, None) == [CropBox(7, 3, 26, 26, 32, 32)]
    with pytest.raises(ValueError, match=r"^training crops need an rng$"):
        choose_boxes(40, 32, True, 32, None, None)


def test_normalisation_tensors_resize_and_views_stay_on_the_frames_device() -> None:
    meta = torch.device("meta")  # shapes and devices without data: stands in for an accelerator
    mean, std = normalisation_tensors(meta)
    assert mean.shape == std.shape == (1, 3, 1, 1) and mean.device == std.device == meta
    cpu_mean, cpu_std = normalisation_tensors()
    assert cpu_mean.shape == (1, 3, 1, 1) and torch.allclose(cpu_mean.flatten(), torch.tensor(IMAGENET_MEAN) * 255)
    assert torch.allclose(cpu_std.flatten(), torch.tensor(IMAGENET_STD) * 255)
    resized = resize(torch.empty(2, 3, 8, 8, dtype=torch.uint8, device=meta), CropBox(0, 0, 8, 8, 5, 6))
    assert resized.device == meta and resized.dtype == torch.float32 and resized.shape == (2, 3, 6, 5)
    normalised = normalise_views(torch.empty(7, 3, 4, 4, dtype=torch.uint8, device=meta), mean, std)
    assert normalised.device == meta and normalised.dtype == torch.float32 and normalised.shape == (7, 3, 4, 4)
    frames = [torch.empty(3, 20, 30, dtype=torch.uint8, device=meta)]  # one stored frame, every view reads it
    plan = plan_frames(1, (2, 4), False, None, num_clips=2)
    views = video_views(frames, eval_boxes(30, 20, 16, 18, 3), plan.positions, mean, std)
    assert {frames: (tensor.shape, tensor.device) for frames, tensor in views.items()} == {
        2: ((6, 2, 3, 16, 16), meta), 4: ((6, 4, 3, 16, 16), meta)}


def test_one_frame_crops_and_views() -> None:
    frame = torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8).permute(2, 0, 1)
    box = CropBox(3, 2, 10, 12, 10, 12)
    crops = crop_frames([frame], [0], box)
    assert torch.equal(crops[0], frame[:, 2:14, 3:13]) and crops.shape == (1, 3, 12, 10)
    mean, std = normalisation_tensors()
    plan = plan_frames(1, (3,), True, np.random.default_rng(0))
    views = video_views([frame], [box], plan.positions, mean, std)
    expected = ((frame[:, 2:14, 3:13].float() - mean) / std).expand(3, -1, -1, -1)
    assert torch.equal(views[3][0], expected)


def test_training_uses_one_clip_and_sampling_defaults() -> None:
    plan = plan_frames(40, (4, 8), True, np.random.default_rng(1), num_clips=3)
    assert len(plan.positions) == 1
    assert sample_indices(3, 6, False).tolist() == [0] * 6  # default rule "official": a short video repeats frame 0
    assert sample_indices(1, 4, True, np.random.default_rng(0)).tolist() == [0, 0, 0, 0]  # one frame is enough
    assert sample_indices(9, 1, False).tolist() == [4]  # one segment: its centre
    assert sample_indices(3, 6, True, np.random.default_rng(0), short_video="spread").tolist() == [0, 0, 1, 1, 2, 2]


def test_indices_stay_in_the_video_for_fractions_just_below_one() -> None:
    last = float(np.nextafter(1.0, 0.0))  # (T - 1 + last) * n / T rounds up to n in float arithmetic
    assert eval_indices(9, 4, clip_fraction=last).tolist() == [2, 4, 6, 8]
    assert eval_indices(3, 7, short_video="spread", clip_fraction=last).tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_index_arrays_are_int64_in_every_branch() -> None:
    rng = np.random.default_rng(0)
    arrays = [train_indices(40, 8, rng), train_indices(5, 8, rng), train_indices(5, 8, rng, short_video="spread"),
              eval_indices(40, 8), eval_indices(5, 8), eval_indices(5, 8, short_video="spread"),
              eval_indices(5, 8, short_video="segments")]
    assert [array.dtype for array in arrays] == [np.dtype(np.int64)] * len(arrays)


def test_training_offsets_differ_between_segments_of_one_clip() -> None:
    rng = np.random.default_rng(2)
    clips = np.stack([train_indices(48, 8, rng) % 6 for _ in range(200)])  # segments of 6 frames
    assert np.mean([len(set(offsets.tolist())) > 1 for offsets in clips]) > 0.9  # one draw per segment
    counts = np.bincount(clips.ravel(), minlength=6) / clips.size
    assert np.all(np.abs(counts - 1 / 6) < 0.03), counts


def test_eval_clip_fractions_start_at_the_centre_and_go_around() -> None:
    assert eval_clip_fractions(1) == [0.5]
    assert eval_clip_fractions(2) == [0.5, 0.0]
    assert eval_clip_fractions(3) == pytest.approx([0.5, 0.5 + 1 / 3, 1 / 6])
    assert eval_clip_fractions(4) == pytest.approx([0.5, 0.75, 0.0, 0.25])


@pytest.mark.parametrize("sampling", ["independent", "nested"])
def test_multi_rate_sampling_consumes_the_rng_in_a_fixed_order(sampling: str) -> None:
    """The same seed gives the same frames (demo numbers depend on it): replay the documented draw order."""
    rng = np.random.default_rng(5)
    result = indices_by_frames(48, (8, 4, 16), True, rng, sampling=sampling)
    replay = np.random.default_rng(5)
    if sampling == "independent":
        expected = {frames: train_indices(48, frames, replay) for frames in (8, 4, 16)}
    else:
        base = train_indices(48, 16, replay)
        expected = {8: base[nested_positions(16, 8, True, replay)], 4: base[nested_positions(16, 4, True, replay)],
                    16: base}
    assert rng.random() == replay.random()  # no draw more or less than the replay
    assert list(result) == [8, 4, 16]
    assert {frames: indices.tolist() for frames, indices in result.items()} == {
        frames: indices.tolist() for frames, indices in expected.items()}
    again = indices_by_frames(48, (8, 4, 16), True, np.random.default_rng(6), sampling=sampling)
    assert any(again[frames].tolist() != result[frames].tolist() for frames in (4, 8, 16))  # random in training


def test_nested_positions_draw_one_fraction_per_group() -> None:
    rng = np.random.default_rng(9)
    positions = np.stack([nested_positions(16, 4, True, rng) for _ in range(300)])
    assert np.all(positions // 4 == np.arange(4))  # one member of each group of 4
    assert np.mean([len(set((row % 4).tolist())) > 1 for row in positions]) > 0.9  # drawn apart
    assert nested_positions(16, 4, False).tolist() == [2, 6, 10, 14]


def test_nested_test_clips_follow_the_clip_fraction() -> None:
    first = indices_by_frames(48, (4, 16), False, None, sampling="nested", clip_fraction=0.0)
    assert first[16].tolist() == eval_indices(48, 16, clip_fraction=0.0).tolist() == list(range(0, 48, 3))
    assert first[4].tolist() == [first[16][position] for position in (2, 6, 10, 14)]


def test_bad_sampling_arguments_name_the_value_and_the_fix() -> None:
    cases = [
        (lambda: sample_indices(48, 8, train=True), r"^training sampling needs an rng$"),
        (lambda: nested_positions(16, 4, True), r"^training sampling needs an rng$"),
        (lambda: sample_indices(0, 8, train=False), r"^need num_frames >= 1 and frames >= 1, got 0 and 8$"),
        (lambda: sample_indices(8, 0, train=False), r"^need num_frames >= 1 and frames >= 1, got 8 and 0$"),
        (lambda: indices_by_frames(48, (), False),
         r"^requested_frames is empty; pass at least one frame count, e\.g\. \(16,\)$"),
        (lambda: indices_by_frames(48, (8,), False, sampling="both"),
         r"^sampling='both'; use one of \('independent', 'nested', 'rounded'\)$"),
        (lambda: train_indices(48, 8, np.random.default_rng(0), short_video="segments"),
         r"^short_video=segments is a test-only rule; use official or spread$"),
        (lambda: eval_indices(48, 8, short_video="stretch"),
         r"^short_video='stretch'; use one of \('official', 'spread', 'segments'\)$"),
        (lambda: eval_clip_fractions(0), r"^test_clips must be at least 1, got 0$"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_normalisation_of_a_bgr_model_is_given_in_rgb_order() -> None:
    bgr = Normalisation(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), channel_order="BGR")
    assert bgr.rgb_mean_std() == ((0.3, 0.2, 0.1), (0.6, 0.5, 0.4))
    assert Normalisation(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)).rgb_mean_std() == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    mean, std = normalisation_tensors("cpu", bgr)
    assert torch.allclose(mean.flatten(), torch.tensor([0.3, 0.2, 0.1]) * 255)
    assert torch.allclose(std.flatten(), torch.tensor([0.6, 0.5, 0.4]) * 255)
    with pytest.raises(ValueError, match=r"^channel_order='GBR'; use one of \('RGB', 'BGR'\)$"):
        Normalisation(channel_order="GBR")


class ViewsInAWorker(torch.utils.data.Dataset):
    """Allocates a float and a uint8 batch layout where the loader's workers do (cpu backend)."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        layouts = {"float": allocate_views((2, 3), 2, 1, (4, 5)), "uint8": allocate_views((2,), 1, 3, (4, 4), "cpu",
                                                                                          torch.uint8)}
        return {name: {frames: f"{tuple(tensor.shape)} {tensor.dtype} shared={tensor.is_shared()} "
                               f"channel stride {tensor.stride()[2]}" for frames, tensor in outputs.items()}
                for name, outputs in layouts.items()}


def test_worker_batches_are_allocated_in_shared_memory() -> None:
    loader = torch.utils.data.DataLoader(ViewsInAWorker(), batch_size=None, num_workers=1)
    (described,) = list(loader)
    assert described["float"] == {2: "(2, 2, 3, 4, 5) torch.float32 shared=True channel stride 20",
                                  3: "(2, 3, 3, 4, 5) torch.float32 shared=True channel stride 20"}
    assert described["uint8"] == {2: "(3, 2, 3, 4, 4) torch.uint8 shared=True channel stride 1"}
    here = allocate_views((2,), 1, 1, (4, 4))  # the main process: ordinary memory
    assert not here[2].is_shared()
