"""Spatial augmentation: crop-box choice (pure, shared by every backend) and the torch crop/resize/normalise.

Every transform is expressed as one integer crop box in the stored frame's pixels, resized to the output size
with bilinear interpolation (half-pixel centres, no antialiasing), optionally mirrored, then normalised with the
ImageNet mean/std. Every backend (cpu, torchvision, dali) takes the same boxes, so their outputs differ only by
JPEG decoder and rounding.

Test views follow the official test scripts (see docs/evaluation_protocols.md): the frame is resized so its short
side is R (torchvision ``Resize(R)``: long side ``int(R * long / short)``), then cropped, either at the centre
(torchvision ``CenterCrop(C)``: origin ``int(round((W - C) / 2))``, Python rounding) or at TSM's three
GroupFullResSample positions (steps ``(W - C) // 4``, ``(H - C) // 4``; left ``(0, 2 h)``, right ``(4 w, 2 h)``,
centre ``(2 w, 2 h)``, in that order). The origins are computed in the resized frame and mapped back to stored
pixels; the box of side ``round(C * short / R)`` is then resized to C x C, so the resize touches only the pixels
that survive the crop. Frames stored at short side R (what `make shards` writes) need no resize: the views are
exact slices, equal to the official chain's pixels. Other stored sizes differ from the official chain by the
resampling filter and by under one stored pixel of crop position (measured in docs/evaluation_protocols.md).

Training crops (``train_crop``), one box per view, shared by every frame and frame count of the view:

- "multi-scale" (TSM / TEA, TSN's GroupMultiScaleCrop): base = the short side; candidate sides ``int(base * s)``
  for s in (1, .875, .75, .66), a side within 3 px of the crop size snapped to it (official quirk); a (width,
  height) pair whose scale indices differ by at most 1; one of 13 fixed offsets on a 4 x 4 grid of steps
  ``(W - w) // 4``, ``(H - h) // 4``; resized to crop x crop. A snapped side larger than the frame is clamped to it.
- "resized": a uniformly random crop of the frame resized to short side ``test_resize``.
- "jitter" (SlowFast, PySlowFast's ``random_short_side_scale_jitter`` with inverse-uniform sampling, then
  ``random_crop``): short side ``S = round(1 / U(1 / high, 1 / low))`` for ``jitter_range = (low, high)``, long side
  ``floor(long / short * S)``, crop origin ``randint(0, H' - C)`` / ``randint(0, W' - C)`` (end excluded, as
  numpy's randint there; 0 when the side equals the crop).
- "random-resized" (UniFormer, PySlowFast's ``random_resized_crop``): up to 10 tries of an area fraction
  U(0.08, 1) and a log-uniform aspect ratio in [3/4, 4/3], ``w = round(sqrt(area * ratio))``,
  ``h = round(sqrt(area / ratio))``, accepted when it fits, origin uniform (both ends included); else the central
  crop clamped to the ratio range; resized to crop x crop (the box is not square).

Test crops (``test_crop_layout``): "tsm" (above: torchvision CenterCrop, or GroupFullResSample for 3) or
"uniform" (PySlowFast's ``uniform_crop``: crop c of the short-side-resized frame at index c along the long side:
0 the left / top, 1 the centre ``ceil((W - C) / 2)``, 2 the right / bottom; one crop is index 0, as FFN's
Something-Something loaders test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as functional
from torch.utils.data import get_worker_info

from common.imagenet import IMAGENET_MEAN, IMAGENET_STD
from data_pipeline.sampling import clip_gathers

MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)
MAX_SCALE_DISTORTION = 1
SNAP_TOLERANCE_PX = 3
TEST_SCALE_NUMERATOR, TEST_SCALE_DENOMINATOR = 256, 224  # official scale_size = crop * 256 // 224
CHANNEL_ORDERS = ("RGB", "BGR")
TEST_CROP_COUNTS = (1, 3)
TRAIN_CROPS = ("multi-scale", "resized", "jitter", "random-resized")
TEST_CROP_LAYOUTS = ("tsm", "uniform")
DEFAULT_JITTER_RANGE = (256, 320)
RANDOM_RESIZED_SCALE = (0.08, 1.0)
RANDOM_RESIZED_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RANDOM_RESIZED_TRIES = 10
DEFAULT_CROP_SIZE = 224  # the crop of every official protocol (train and test)
# Frames normalised per step on the CPU: 4 frames of 224 x 224 are 2.4 MB of float, which stay in cache between
# the conversion and the two arithmetic passes (faster than whole-batch passes, see benchmarks/bench_pipeline.py).
CPU_NORMALISE_CHUNK_FRAMES = 4
# (column step, row step) multipliers of the 13 official fixed offsets.
FIXED_OFFSET_STEPS = (
    (0, 0), (4, 0), (0, 4), (4, 4), (2, 2),
    (0, 2), (4, 2), (2, 4), (2, 0),
    (1, 1), (3, 1), (1, 3), (3, 3),
)  # fmt: skip


@dataclass(frozen=True)
class CropBox:
    """One spatial transform: crop [y, y+height) x [x, x+width) of the stored frame, resize, maybe mirror."""

    x: int
    y: int
    width: int
    height: int
    out_width: int
    out_height: int
    flip: bool = False


def default_test_resize(crop_size: int) -> int:
    """Return the official test short side for a crop size, ``crop * 256 // 224`` (256 for 224)."""
    return crop_size * TEST_SCALE_NUMERATOR // TEST_SCALE_DENOMINATOR


def _candidate_sides(base: int, crop_size: int) -> list[int]:
    """Return the multi-scale candidate sides with the official snap to the crop size."""
    sides = [int(base * scale) for scale in MULTI_SCALES]
    return [crop_size if abs(side - crop_size) < SNAP_TOLERANCE_PX else side for side in sides]


def multi_scale_box(width: int, height: int, crop_size: int, rng: np.random.Generator, flip: bool) -> CropBox:
    """Choose the official multi-scale crop of a width x height frame (see the module docstring)."""
    sides = _candidate_sides(min(width, height), crop_size)
    pairs = [
        (sides[column], sides[row])
        for row in range(len(sides))
        for column in range(len(sides))
        if abs(row - column) <= MAX_SCALE_DISTORTION
    ]
    crop_width, crop_height = pairs[int(rng.integers(len(pairs)))]
    crop_width, crop_height = min(crop_width, width), min(crop_height, height)
    column_step, row_step = (width - crop_width) // 4, (height - crop_height) // 4
    column_factor, row_factor = FIXED_OFFSET_STEPS[int(rng.integers(len(FIXED_OFFSET_STEPS)))]
    mirror = bool(flip and rng.random() < 0.5)
    return CropBox(
        column_factor * column_step, row_factor * row_step, crop_width, crop_height, crop_size, crop_size, mirror
    )


def _resized_crop_side(width: int, height: int, crop_size: int, resize: int) -> int:
    """Return the stored-pixel side of a crop_size crop taken after resizing the short side to `resize`."""
    short = min(width, height)
    return max(1, min(short, int(round(crop_size * short / resize))))


def resized_box(
    width: int, height: int, crop_size: int, resize: int, rng: np.random.Generator, flip: bool
) -> CropBox:
    """Choose a uniformly random crop_size crop of the frame resized to short side `resize` (train_crop "resized")."""
    side = _resized_crop_side(width, height, crop_size, resize)
    x = int(rng.integers(width - side + 1))
    y = int(rng.integers(height - side + 1))
    mirror = bool(flip and rng.random() < 0.5)
    return CropBox(x, y, side, side, crop_size, crop_size, mirror)


def jitter_box(
    width: int, height: int, crop_size: int, jitter_range: Sequence[int], rng: np.random.Generator, flip: bool
) -> CropBox:
    """Choose the short-side jitter crop (train_crop "jitter", see the module docstring): short side S drawn
    inverse-uniformly in `jitter_range`, then a random crop_size crop of the frame resized to S."""
    low, high = (int(side) for side in jitter_range)
    short_side = int(round(1.0 / rng.uniform(1.0 / high, 1.0 / low)))
    if width < height:
        scaled_width, scaled_height = short_side, int(math.floor(float(height) / width * short_side))
    else:
        scaled_width, scaled_height = int(math.floor(float(width) / height * short_side)), short_side
    y = int(rng.integers(0, scaled_height - crop_size)) if scaled_height > crop_size else 0
    x = int(rng.integers(0, scaled_width - crop_size)) if scaled_width > crop_size else 0
    side = _resized_crop_side(width, height, crop_size, short_side)
    mirror = bool(flip and rng.random() < 0.5)
    return CropBox(_to_stored(x, scaled_width, width, side), _to_stored(y, scaled_height, height, side), side, side,
                   crop_size, crop_size, mirror)


def random_resized_box(
    width: int, height: int, crop_size: int, rng: np.random.Generator, flip: bool,
    scale: Sequence[float] = RANDOM_RESIZED_SCALE, ratio: Sequence[float] = RANDOM_RESIZED_RATIO,
) -> CropBox:
    """Choose the Inception-style random resized crop (train_crop "random-resized", see the module docstring)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(RANDOM_RESIZED_TRIES):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        box_width = int(round(math.sqrt(target_area * aspect)))
        box_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < box_width <= width and 0 < box_height <= height:
            y = int(rng.integers(0, height - box_height + 1))
            x = int(rng.integers(0, width - box_width + 1))
            break
    else:
        frame_ratio = width / height
        if frame_ratio < min(ratio):
            box_width, box_height = width, int(round(width / min(ratio)))
        elif frame_ratio > max(ratio):
            box_width, box_height = int(round(height * max(ratio))), height
        else:
            box_width, box_height = width, height
        y, x = (height - box_height) // 2, (width - box_width) // 2
    mirror = bool(flip and rng.random() < 0.5)
    return CropBox(x, y, box_width, box_height, crop_size, crop_size, mirror)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Return the (width, height) of a frame resized to `short_side` as torchvision's ``Resize(int)`` does.

    The short side becomes `short_side` and the long side ``int(short_side * long / short)`` (truncated); a frame
    already at that size is left alone.
    """
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def centre_crop_origin(width: int, height: int, crop_size: int) -> tuple[int, int]:
    """Return torchvision ``CenterCrop``'s (x, y): ``int(round((W - C) / 2))``, Python's round (half to even)."""
    return int(round((width - crop_size) / 2.0)), int(round((height - crop_size) / 2.0))


def full_res_origins(width: int, height: int, crop_size: int) -> list[tuple[int, int]]:
    """Return TSM's GroupFullResSample (x, y) origins in its order: left, right, centre, all at row 2 * h_step."""
    column_step, row_step = (width - crop_size) // 4, (height - crop_size) // 4
    return [(0, 2 * row_step), (4 * column_step, 2 * row_step), (2 * column_step, 2 * row_step)]


def _to_stored(origin: int, scaled: int, stored: int, side: int) -> int:
    """Map an origin in the resized frame to stored pixels (nearest pixel, the box kept inside the frame)."""
    mapped = origin if scaled == stored else int(math.floor(origin * stored / scaled + 0.5))
    return max(0, min(stored - side, mapped))


def uniform_origins(width: int, height: int, crop_size: int, num_crops: int) -> list[tuple[int, int]]:
    """Return PySlowFast ``uniform_crop``'s (x, y) origins for crop indices 0 .. num_crops - 1 (one crop: index 0,
    the left or top crop; three: left / top, centre, right / bottom), along the long side."""
    centre_x, centre_y = int(math.ceil((width - crop_size) / 2)), int(math.ceil((height - crop_size) / 2))
    origins = []
    for index in range(num_crops):
        x, y = centre_x, centre_y
        if height > width:
            y = {0: 0, 2: height - crop_size}.get(index, centre_y)
        else:
            x = {0: 0, 2: width - crop_size}.get(index, centre_x)
        origins.append((x, y))
    return origins


def eval_boxes(width: int, height: int, crop_size: int, resize: int, num_crops: int = 1,
               layout: str = "tsm") -> list[CropBox]:
    """Return the test crops of the official test chain (resize the short side to `resize`, then crop).

    Parameters
    ----------
    width, height : int
        Stored frame size.
    crop_size : int
        Output side (224; 256 with ``resize`` 256 is TSM's ``--full_res``).
    resize : int
        Short side of the official resize (GroupScale).
    num_crops : int
        1 or 3.
    layout : str
        "tsm": 1 is the centre crop (torchvision CenterCrop), 3 TSM's GroupFullResSample (left, right, centre);
        "uniform": PySlowFast's uniform_crop (`uniform_origins`).

    Raises
    ------
    ValueError
        If num_crops is not 1 or 3, or the layout is unknown.
    """
    if num_crops not in TEST_CROP_COUNTS:
        raise ValueError(f"test_crops={num_crops}; use 1 (centre crop) or 3 (TSM's GroupFullResSample)")
    if layout not in TEST_CROP_LAYOUTS:
        raise ValueError(f"test_crop_layout={layout!r}; use one of {TEST_CROP_LAYOUTS}")
    scaled_width, scaled_height = scaled_size(width, height, resize)
    if layout == "uniform":
        origins = uniform_origins(scaled_width, scaled_height, crop_size, num_crops)
    elif num_crops == 1:
        origins = [centre_crop_origin(scaled_width, scaled_height, crop_size)]
    else:
        origins = full_res_origins(scaled_width, scaled_height, crop_size)
    side = _resized_crop_side(width, height, crop_size, resize)
    return [
        CropBox(
            _to_stored(x, scaled_width, width, side), _to_stored(y, scaled_height, height, side), side, side,
            crop_size, crop_size,
        )
        for x, y in origins
    ]


def train_box(width: int, height: int, crop_size: int, resize: int, rng: np.random.Generator, train_crop: str,
              flip: bool = False, jitter_range: Sequence[int] = DEFAULT_JITTER_RANGE) -> CropBox:
    """One training crop box of the mode `train_crop` (one of TRAIN_CROPS; see the module docstring)."""
    if train_crop == "multi-scale":
        return multi_scale_box(width, height, crop_size, rng, flip)
    if train_crop == "resized":
        return resized_box(width, height, crop_size, resize, rng, flip)
    if train_crop == "jitter":
        return jitter_box(width, height, crop_size, jitter_range, rng, flip)
    if train_crop == "random-resized":
        return random_resized_box(width, height, crop_size, rng, flip)
    raise ValueError(f"train_crop={train_crop!r}; use one of {TRAIN_CROPS}")


def resolve_train_crop(train_crop: str | None, multi_scale: bool) -> str:
    """The training crop mode: `train_crop` when given, else "multi-scale" or "resized" as `multi_scale` says."""
    if train_crop is None:
        return "multi-scale" if multi_scale else "resized"
    if train_crop not in TRAIN_CROPS:
        raise ValueError(f"train_crop={train_crop!r}; use one of {TRAIN_CROPS}")
    return train_crop


def choose_boxes(
    width: int,
    height: int,
    train: bool,
    crop_size: int,
    test_resize: int | None,
    rng: np.random.Generator | None,
    multi_scale: bool = True,
    flip: bool = False,
    test_crops: int = 1,
    *,
    train_crop: str | None = None,
    jitter_range: Sequence[int] = DEFAULT_JITTER_RANGE,
    train_views: int = 1,
    test_crop_size: int | None = None,
    test_crop_layout: str = "tsm",
) -> list[CropBox]:
    """Return the crop boxes of one video: in training one per view (each shared by all frames and frame counts of
    its view), else the test crops.

    Parameters
    ----------
    width, height : int
        Stored frame size.
    train : bool
        Training (random crops) or test (fixed crops).
    crop_size : int
        Output side of the training crops (and of the test crops unless `test_crop_size`).
    test_resize : int, optional
        Short side before the crop (None: the official ``crop_size * 256 // 224``); used by test crops and by
        the "resized" training crop.
    rng : numpy.random.Generator, optional
        Needed when training.
    multi_scale : bool
        Without `train_crop`: the official multi-scale crop (True) or "resized" (False).
    flip : bool
        Random horizontal mirror in training (off for Something-Something: its labels are directional).
    test_crops : int
        1 or 3.
    train_crop : str, optional
        One of TRAIN_CROPS (None: from `multi_scale`).
    jitter_range : pair of int
        The short-side range of the "jitter" crop.
    train_views : int
        Training boxes drawn one after the other (repeated augmentation: each is one view of the video).
    test_crop_size : int, optional
        Output side of the test crops (None: `crop_size`).
    test_crop_layout : str
        "tsm" or "uniform" (see `eval_boxes`).
    """
    resize = test_resize if test_resize is not None else default_test_resize(crop_size)
    if not train:
        return eval_boxes(width, height, test_crop_size or crop_size, resize, test_crops, test_crop_layout)
    if rng is None:
        raise ValueError("training crops need an rng")
    mode = resolve_train_crop(train_crop, multi_scale)
    return [train_box(width, height, crop_size, resize, rng, mode, flip, jitter_range) for _ in range(train_views)]


@dataclass(frozen=True)
class Normalisation:
    """How a model wants its frames: per-channel mean and std on the 0-1 scale, and the channel order.

    `mean` and `std` are given in the model's own channel order (as a model's input_spec declares them). Frames are
    decoded as RGB and normalised with the RGB-ordered values; a BGR model then gets the channels reversed
    (loader.batch_on_device), whatever the decoder.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        """Check the channel order."""
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order={self.channel_order!r}; use one of {CHANNEL_ORDERS}")

    @property
    def reversed_channels(self) -> bool:
        """True when the model reads BGR (the decoded RGB channels are reversed after normalisation)."""
        return self.channel_order == "BGR"

    def rgb_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and std in RGB order (the decoded frames' order)."""
        if self.reversed_channels:
            return tuple(reversed(self.mean)), tuple(reversed(self.std))
        return tuple(self.mean), tuple(self.std)


IMAGENET_NORMALISATION = Normalisation()


def normalisation_tensors(
    device: torch.device | str = "cpu", normalisation: Normalisation = IMAGENET_NORMALISATION
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the mean and std on the 0-255 scale in RGB order, shaped (1, 3, 1, 1) (ImageNet's by default)."""
    rgb_mean, rgb_std = normalisation.rgb_mean_std()
    mean = torch.tensor(rgb_mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(rgb_std, device=device).view(1, 3, 1, 1) * 255.0
    return mean, std


def crop_frames(frames: Sequence[torch.Tensor], indices: Sequence[int], box: CropBox) -> torch.Tensor:
    """Stack the box region of the chosen frames (each uint8 (3, H, W)) as uint8 (n, 3, h, w).

    Frames held channels-last in memory (what the CPU JPEG decoders return: a (3, H, W) view of (H, W, 3) data)
    are stacked without reordering and come back channels-last, the layout torch's uint8 bilinear resize is fast
    on (about 3x the contiguous-planes path on the CPU, bit-identical output); other frames come back contiguous.
    """
    rows, columns = slice(box.y, box.y + box.height), slice(box.x, box.x + box.width)
    if frames[int(indices[0])].stride(0) == 1:
        crops = [frames[int(index)].permute(1, 2, 0)[rows, columns] for index in indices]
        return torch.stack(crops).permute(0, 3, 1, 2)
    return torch.stack([frames[int(index)][:, rows, columns] for index in indices])


def resize(crops: torch.Tensor, box: CropBox) -> torch.Tensor:
    """Resize uint8 crops (n, 3, h, w) to the box's output size and mirror if asked (not normalised).

    Bilinear, half-pixel centres (align_corners=False), no antialiasing: the arithmetic of DALI's linear resize
    without antialias. On the CPU the resize runs on uint8 and returns uint8 (torch's vectorised path, rounded
    like DALI's uint8 output, within 1 of the float result); on other devices it runs in float and returns float
    on the 0-255 scale. A crop already at the output size is not resampled.
    """
    size = (box.out_height, box.out_width)
    images = crops
    if tuple(crops.shape[-2:]) != size:
        if crops.device.type != "cpu":
            images = images.float()
        images = functional.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)
    return images.flip(-1) if box.flip else images


def normalise_into(output: torch.Tensor, frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalise `frames` into float `output` as ``(x - mean) / std`` and return `output`.

    `frames` (..., 3, H, W) is uint8 or float on the 0-255 scale, in any memory layout; `output` has its shape and
    is contiguous. The one normalisation of every torch path (cpu worker, uint8 hand-over, GPU augmentation), so
    they agree to the bit. On the CPU it runs CPU_NORMALISE_CHUNK_FRAMES frames at a time (cache-resident passes);
    the layout change from channels-last happens inside the conversion.
    """
    flat_output, flat_frames = output.view(-1, *output.shape[-3:]), frames.reshape(-1, *frames.shape[-3:])
    step = CPU_NORMALISE_CHUNK_FRAMES if output.device.type == "cpu" else max(flat_output.shape[0], 1)
    for start in range(0, flat_output.shape[0], step):
        chunk = flat_output[start : start + step]
        chunk.copy_(flat_frames[start : start + step]).sub_(mean).div_(std)
    return output


def crop_resize(frames: torch.Tensor, box: CropBox) -> torch.Tensor:
    """Crop and resize uint8 frames (N, 3, H, W) to float (N, 3, S, S) on the 0-255 scale (no normalisation)."""
    return resize(crop_frames(list(frames), range(frames.shape[0]), box), box).float().contiguous()


def render_views(
    images: Sequence[torch.Tensor],
    boxes: Sequence[CropBox],
    positions: Sequence[dict[int, np.ndarray]],
    mean: torch.Tensor,
    std: torch.Tensor,
    outputs: dict[int, torch.Tensor],
) -> None:
    """Write every view of one video into preallocated outputs.

    Parameters
    ----------
    images : sequence of torch.Tensor
        The video's unique decoded frames, uint8 (3, H, W) each (each decoded once).
    boxes : sequence of CropBox
        The spatial crops (one in training, shared by every frame and frame count).
    positions : sequence of dict
        Per temporal clip, {T: positions into `images`} (see sampling.plan_frames).
    mean, std : torch.Tensor
        From `normalisation_tensors`, on the images' device.
    outputs : dict
        {T: (V, T, 3, S, S)}, V = clips x crops, view = clip * crops + crop; filled in place. Float outputs
        receive normalised values; uint8 outputs (CPU only) the resized 0-255 pixels, for `normalise_views` later
        (on the training device).
    """
    for clip_index, clip in enumerate(positions):
        needed, local_positions = clip_gathers(clip)
        local = {frames: torch.as_tensor(indices, device=images[0].device)
                 for frames, indices in local_positions.items()}
        for crop_index, box in enumerate(boxes):
            resized = resize(crop_frames(images, needed, box), box)
            view = clip_index * len(boxes) + crop_index
            for frames, gather in local.items():
                target = outputs[frames][view]
                if target.is_floating_point():
                    normalise_into(target, resized.index_select(0, gather), mean, std)
                else:  # uint8 batch held channels-last (allocate_views): a plain gather, no reordering
                    torch.index_select(resized.permute(0, 2, 3, 1), 0, gather, out=target.permute(0, 2, 3, 1))


def normalise_views(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Return uint8 views (..., 3, S, S), in any memory layout, as contiguous float normalised with `mean`, `std`.

    `normalise_into`, the arithmetic of render_views' float outputs, so both paths give equal numbers; the
    channels-last to planes reordering happens inside the conversion (on the device when it is not the CPU).
    """
    output = torch.empty(frames.shape, dtype=torch.float32, device=frames.device)
    return normalise_into(output, frames, mean, std)


def allocate_views(
    batch_frames: Sequence[int],
    videos: int,
    views: int,
    size: tuple[int, int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[int, torch.Tensor]:
    """Allocate the batch layout {T: (videos * views, T, 3, height, width)} for every T of `batch_frames`.

    Float batches are contiguous. uint8 batches (the cpu backend's, normalised later by `normalise_views`) are
    (3, height, width) views of (height, width, 3) memory, the layout the CPU resize produces, so filling them is
    a gather without reordering (the reordering moves to the device). Inside a DataLoader worker the CPU tensors
    are allocated in shared memory (as torch's default_collate does), so handing the batch to the main process
    copies nothing.
    """
    channels_last = dtype == torch.uint8
    shapes = {
        int(frames): (videos * views, int(frames), *size, 3) if channels_last
        else (videos * views, int(frames), 3, *size)
        for frames in batch_frames
    }
    if torch.device(device).type == "cpu" and get_worker_info() is not None:
        outputs = {frames: shared_empty(shape, dtype) for frames, shape in shapes.items()}
    else:
        outputs = {frames: torch.empty(shape, device=device, dtype=dtype) for frames, shape in shapes.items()}
    if channels_last:
        return {frames: tensor.permute(0, 1, 4, 2, 3) for frames, tensor in outputs.items()}
    return outputs


def shared_empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised CPU tensor backed by shared memory (no copy when sent to another process)."""
    item_size = torch.empty(0, dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * item_size)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def video_views(
    images: Sequence[torch.Tensor],
    boxes: Sequence[CropBox],
    positions: Sequence[dict[int, np.ndarray]],
    mean: torch.Tensor,
    std: torch.Tensor,
) -> dict[int, torch.Tensor]:
    """Return every view of one video, {T: float (V, T, 3, S, S)} (see `render_views`)."""
    first = images[0]
    outputs = allocate_views(
        list(positions[0].keys()), 1, len(boxes) * len(positions), (boxes[0].out_height, boxes[0].out_width),
        first.device,
    )  # fmt: skip
    render_views(images, boxes, positions, mean, std, outputs)
    return outputs
