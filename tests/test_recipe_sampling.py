"""The loader options of the official 3D / Transformer recipes: the rounded frame sampling (against a direct
transcription of FFN-pytorch's sth_ffn.py rule), the short-side jitter and random resized training crops, the
uniform test crops (PySlowFast's uniform_crop) and repeated augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_pipeline.augment import (
    RANDOM_RESIZED_RATIO,
    choose_boxes,
    eval_boxes,
    jitter_box,
    random_resized_box,
    uniform_origins,
)
from data_pipeline.sampling import indices_by_frames, plan_frames, rounded_training_order

VIDEO_LENGTHS = [1, 2, 3, 5, 15, 16, 17, 31, 32, 33, 45, 64, 65, 100, 111, 113, 200]


def transcribed_train(num_frames: int, counts: tuple[int, int, int], rng: np.random.Generator) -> dict[int, list[int]]:
    """sth_ffn.py's training rule for counts (H, M, L), drawn in the order H, L, M, with one integer draw per frame
    (``randint(start, end)``, both ends included; 0-based)."""
    high, middle, low = counts
    drawn = {}
    for frames in (high, low, middle):
        segment = float(num_frames - 1) / frames
        indices = []
        for index in range(frames):
            start = int(np.round(segment * index))
            end = int(np.round(segment * (index + 1)))
            indices.append(int(rng.integers(start, end + 1)))
        drawn[frames] = indices
    return drawn


def transcribed_test(num_frames: int, frames: int, clip: int = 0, clips: int = 1) -> list[int]:
    """sth_ffn.py's test rule (0-based): start of the segment + int(duration x (clip + 1))."""
    segment = float(num_frames - 1) / frames
    duration = segment / (clips + 1)
    return [int(np.round(segment * index)) + int(duration * (clip + 1)) for index in range(frames)]


@pytest.mark.parametrize("num_frames", VIDEO_LENGTHS)
@pytest.mark.parametrize("counts", [(16, 8, 4), (64, 32, 16)])
def test_rounded_training_sampling_equals_the_transcribed_rule(num_frames: int, counts) -> None:
    for seed in range(5):
        ours = indices_by_frames(num_frames, sorted(counts), True, np.random.default_rng(seed), sampling="rounded")
        reference = transcribed_train(num_frames, counts, np.random.default_rng(seed))
        assert {frames: indices.tolist() for frames, indices in ours.items()} == reference
        assert all(indices.dtype == np.int64 and indices.min() >= 0 and indices.max() < num_frames
                   for indices in ours.values())


@pytest.mark.parametrize("num_frames", VIDEO_LENGTHS)
def test_rounded_test_sampling_equals_the_transcribed_rule(num_frames: int) -> None:
    for frames in (4, 8, 16, 32, 64):
        plan = plan_frames(num_frames, [frames], False, sampling="rounded")
        assert plan.unique[plan.positions[0][frames]].tolist() == transcribed_test(num_frames, frames)
        two = plan_frames(num_frames, [frames], False, sampling="rounded", num_clips=2)
        for clip in range(2):
            assert two.unique[two.positions[clip][frames]].tolist() == transcribed_test(num_frames, frames, clip, 2)


def test_rounded_rule_includes_both_segment_ends_and_uses_half_to_even_rounding() -> None:
    # n = 10, T = 4: s = 2.25; bounds round(0, 2.25, 4.5, 6.75, 9) = 0, 2, 4 (half to even), 7, 9
    seen: dict[int, set[int]] = {index: set() for index in range(4)}
    rng = np.random.default_rng(0)
    for _ in range(400):
        for index, value in enumerate(indices_by_frames(10, [4], True, rng, sampling="rounded")[4]):
            seen[index].add(int(value))
    assert seen == {0: {0, 1, 2}, 1: {2, 3, 4}, 2: {4, 5, 6, 7}, 3: {7, 8, 9}}


def test_rounded_draw_order_is_highest_first_then_ascending() -> None:
    assert rounded_training_order([4, 8, 16]) == [16, 4, 8]
    assert rounded_training_order([64, 16, 32]) == [64, 16, 32]
    assert rounded_training_order([8]) == [8]


def test_rounded_training_plan_decodes_each_frame_once() -> None:
    plan = plan_frames(45, [4, 8, 16], True, np.random.default_rng(3), sampling="rounded")
    assert len(plan.positions) == 1 and plan.unique.tolist() == sorted(set(plan.unique.tolist()))
    assert {frames: len(positions) for frames, positions in plan.positions[0].items()} == {4: 4, 8: 8, 16: 16}


def transcribed_jitter(width: int, height: int, crop: int, low: int, high: int,
                       rng: np.random.Generator) -> tuple[int, int, int, int, int]:
    """PySlowFast's random_short_side_scale_jitter (inverse uniform) and random_crop: (S, W', H', x, y)."""
    size = int(round(1.0 / rng.uniform(1.0 / high, 1.0 / low)))
    if (width <= height and width == size) or (height <= width and height == size):
        new_width, new_height = width, height
    elif width < height:
        new_width, new_height = size, int(math.floor((float(height) / width) * size))
    else:
        new_width, new_height = int(math.floor((float(width) / height) * size)), size
    y = int(rng.integers(0, new_height - crop)) if new_height > crop else 0
    x = int(rng.integers(0, new_width - crop)) if new_width > crop else 0
    return size, new_width, new_height, x, y


@pytest.mark.parametrize(("width", "height"), [(455, 256), (176, 100), (256, 340), (320, 320)])
def test_jitter_crop_follows_pyslowfast_scale_jitter_and_random_crop(width: int, height: int) -> None:
    for seed in range(20):
        box = jitter_box(width, height, 224, (256, 320), np.random.default_rng(seed), flip=False)
        size, new_width, new_height, x, y = transcribed_jitter(width, height, 224, 256, 320,
                                                               np.random.default_rng(seed))
        assert 256 <= size <= 320
        short = min(width, height)
        assert box.width == box.height == max(1, min(short, int(round(224 * short / size))))
        assert (box.out_width, box.out_height, box.flip) == (224, 224, False)
        assert abs(box.x - x * width / new_width) <= 1 and abs(box.y - y * height / new_height) <= 1
        assert 0 <= box.x <= width - box.width and 0 <= box.y <= height - box.height


def test_random_resized_crop_stays_in_the_frame_and_the_ratio_range() -> None:
    rng = np.random.default_rng(0)
    low, high = RANDOM_RESIZED_RATIO
    areas = []
    for _ in range(300):
        box = random_resized_box(176, 100, 224, rng, flip=False)
        assert 0 <= box.x and box.x + box.width <= 176 and 0 <= box.y and box.y + box.height <= 100
        assert (box.out_width, box.out_height) == (224, 224)
        areas.append(box.width * box.height / (176 * 100))
        assert low * 0.9 <= box.width / box.height <= high * 1.1 or box.width == 176 or box.height == 100
    assert min(areas) < 0.2 and max(areas) > 0.6  # the area range 0.08-1 is explored


def test_random_resized_crop_falls_back_to_the_ratio_clamped_centre() -> None:
    class NeverFits:
        """A generator whose area draws never fit (scale 50)."""

        def uniform(self, low: float, high: float) -> float:
            return 50.0 if high == 1.0 else 0.0

        def integers(self, *args):  # pragma: no cover - never reached
            raise AssertionError

    box = random_resized_box(400, 100, 224, NeverFits(), flip=False, scale=(0.08, 1.0))  # type: ignore[arg-type]
    assert (box.width, box.height, box.x, box.y) == (133, 100, 133, 0)  # ratio 4/3 at full height, centred


@pytest.mark.parametrize(("width", "height"), [(398, 224), (224, 300), (256, 256)])
def test_uniform_crops_follow_pyslowfast_uniform_crop(width: int, height: int) -> None:
    def transcribed(index: int) -> tuple[int, int]:
        y, x = int(math.ceil((height - 224) / 2)), int(math.ceil((width - 224) / 2))
        if height > width:
            y = {0: 0, 2: height - 224}.get(index, y)
        else:
            x = {0: 0, 2: width - 224}.get(index, x)
        return x, y

    assert uniform_origins(width, height, 224, 3) == [transcribed(index) for index in range(3)]
    assert uniform_origins(width, height, 224, 1) == [transcribed(0)]


def test_slowfast_test_crop_is_the_left_square_at_short_side_256() -> None:
    (box,) = eval_boxes(455, 256, 256, 256, 1, layout="uniform")
    assert (box.x, box.y, box.width, box.height, box.out_width) == (0, 0, 256, 256, 256)
    (tall,) = eval_boxes(256, 455, 256, 256, 1, layout="uniform")
    assert (tall.x, tall.y) == (0, 0)
    centre, = eval_boxes(455, 256, 256, 256, 1)  # the TSM layout's one crop is the centre
    assert centre.x == 100


def test_train_views_draw_one_box_each_and_one_view_keeps_the_previous_draws() -> None:
    boxes = choose_boxes(455, 256, True, 224, None, np.random.default_rng(1), train_crop="random-resized",
                         train_views=2)
    assert len(boxes) == 2 and boxes[0] != boxes[1]
    one = choose_boxes(455, 256, True, 224, None, np.random.default_rng(1))
    assert one == choose_boxes(455, 256, True, 224, None, np.random.default_rng(1), train_crop="multi-scale")
    resized = choose_boxes(455, 256, True, 224, None, np.random.default_rng(1), multi_scale=False)
    assert resized == choose_boxes(455, 256, True, 224, None, np.random.default_rng(1), train_crop="resized")
    with pytest.raises(ValueError, match="train_crop"):
        choose_boxes(455, 256, True, 224, None, np.random.default_rng(1), train_crop="centre")
    with pytest.raises(ValueError, match="test_crop_layout"):
        choose_boxes(455, 256, False, 224, None, None, test_crop_layout="diagonal")
