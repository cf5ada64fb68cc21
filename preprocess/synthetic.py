"""Synthetic Something-Something-V2-format dataset: temporal classes rendered in numpy, encoded as VP9 WebM.

Every class is a temporal template whose label depends on motion and its order in time, never on appearance:
a bright object of random shape, hue, size, position and texture moves over a dark, faintly textured, noisy
background. The output has SSv2's layout and label schemas::

    <root>/data/20bn-something-something-v2/<id>.webm   VP9 in WebM, 12 fps
    <root>/labels/labels.json       {"Moving something from left to right": "0", ...}
    <root>/labels/train.json        [{"id": "17", "label": "Moving red disc from left to right",
                                      "template": "Moving [something] from left to right",
                                      "placeholders": ["red disc"]}, ...]
    <root>/labels/validation.json   same schema as train.json
    <root>/labels/test.json         [{"id": "5"}, ...]
    <root>/labels/generator.json    settings, counts, ffmpeg path and version; written last (completion marker)

Determinism: each clip draws from its own ``numpy.random.Generator`` seeded by (seed, class, index), so the
clips do not depend on the order or the number of workers; ffmpeg runs single-threaded with bit-exact flags on
batches fixed by the plan, so one seed gives the same annotation files, the same .webm bytes and the same
decoded frames, with any number of workers.

The raw frames are available without ffmpeg through :func:`render_clip` and :func:`iter_clips`.
"""

from __future__ import annotations

import argparse
import colorsys
import concurrent.futures
import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.datasets.ssv2 import LABELS_SUBDIR, VIDEO_SUBDIR, template_key
from common.atomic import write_json_atomic
from shard_format import SPLITS

LOGGER = logging.getLogger("preprocess.synthetic")

GENERATOR_VERSION = 1
GENERATOR_FILE = "generator.json"
LABEL_FILES = ("labels.json", "train.json", "validation.json", "test.json")

CLASS_TEMPLATES: list[str] = [
    "Moving [something] from left to right",
    "Moving [something] from right to left",
    "Moving [something] up",
    "Moving [something] down",
    "Approaching [something] with your camera",
    "Moving away from [something] with your camera",
    "Moving [something] and then stopping it",
    "Holding [something] still, then moving it",
    "Moving [something] away and back again",
    "Holding [something] still",
    "Pushing [something] so that it slightly moves",
    "Moving [something] quickly across the view",
]
CONTROL_TEMPLATES: list[str] = ["[Something] appearing", "[Something] disappearing"]
ALL_TEMPLATES: list[str] = CLASS_TEMPLATES + CONTROL_TEMPLATES

# Geometry in units of a 32-pixel frame; everything is multiplied by min(width, height) / 32.
REFERENCE_SIZE = 32.0
RADIUS_RANGE = (2.5, 4.5)
SLOW_DISPLACEMENT = (3.0, 5.0)
DIRECTION_DISPLACEMENT = (7.0, 11.0)
FAST_DISPLACEMENT = (16.0, 20.0)
ZOOM_RANGE = (1.7, 2.2)
EDGE_MARGIN = 0.5

# Timing as fractions of the clip: motion starts in the first 15% and ends in the last 15%.
START_RANGE = (0.0, 0.15)
END_RANGE = (0.85, 1.0)
MIDDLE_RANGE = (0.4, 0.6)

BACKGROUND_SCALE = 0.4
OBJECT_CHANNEL_RANGE = (0.55, 1.0)
PIXEL_NOISE_SIGMA = 0.03
TEXTURED_NOISE_SIGMA = 0.01
FAINT_TEXTURE_AMPLITUDE = 0.04
FAINT_TEXTURE_CELL = 8.0
# (cell size in pixels at 240 px frame height, amplitude) of the textured mode's background value noise.
RICH_TEXTURE_OCTAVES = ((48.0, 0.10), (16.0, 0.07), (6.0, 0.05), (2.0, 0.02))
CROSS_HATCH_AMPLITUDE = 0.15
CROSS_HATCH_CYCLES = 3.0
OBJECT_STRIPE_AMPLITUDE = (0.0, 0.3)
OBJECT_STRIPE_PERIOD = (0.5, 1.2)
SHAPES = ("disc", "square", "diamond", "triangle")

DEFAULT_FRAMES = 48
MIN_SIZE = 8
DEFAULT_FPS = 12
DEFAULT_SPLIT = (0.7, 0.15, 0.15)
TEXTURED_SIZE = (427, 240)
TEXTURED_SCALE = min(TEXTURED_SIZE) / REFERENCE_SIZE
VP9_CRF = 10
CODEC_ARGS = (
    "-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", str(VP9_CRF), "-b:v", "0",
    "-deadline", "good", "-cpu-used", "4", "-threads", "1", "-row-mt", "0",
    "-fflags", "+bitexact", "-flags", "+bitexact",
)
SYNTHETIC_LAYOUTS = ("ssv1", "k400", "hmdb51", "tsm-list")  # preprocess/synthetic_layouts.py writes these
BATCH_CLIPS = 32
BATCH_PIXELS = BATCH_CLIPS * 32 * 32 * DEFAULT_FRAMES
PROGRESS_EVERY = 16

# Seed streams: each purpose draws from its own SeedSequence branch.
RENDER_STREAM, FRAMES_STREAM, ID_STREAM, SPLIT_STREAM = 0, 1, 2, 3


class DatasetExistsError(RuntimeError):
    """The output directory already holds a dataset and --force was not given."""


@dataclasses.dataclass(frozen=True)
class MotionSpec:
    """How one class moves: a time profile, a direction (None = random angle), a displacement range in 32-px
    units, and a zoom (+1 grows by ZOOM_RANGE over the motion, -1 shrinks, 0 keeps the size)."""

    profile: str
    direction: tuple[float, float] | None
    displacement: tuple[float, float]
    zoom: int = 0


NO_DISPLACEMENT = (0.0, 0.0)
MOTIONS: list[MotionSpec] = [
    MotionSpec("ramp", (1.0, 0.0), DIRECTION_DISPLACEMENT),
    MotionSpec("ramp", (-1.0, 0.0), DIRECTION_DISPLACEMENT),
    MotionSpec("ramp", (0.0, -1.0), DIRECTION_DISPLACEMENT),
    MotionSpec("ramp", (0.0, 1.0), DIRECTION_DISPLACEMENT),
    MotionSpec("ramp", None, NO_DISPLACEMENT, zoom=1),
    MotionSpec("ramp", None, NO_DISPLACEMENT, zoom=-1),
    MotionSpec("first_half", None, DIRECTION_DISPLACEMENT),
    MotionSpec("second_half", None, DIRECTION_DISPLACEMENT),
    MotionSpec("go_and_return", None, DIRECTION_DISPLACEMENT),
    MotionSpec("still", None, NO_DISPLACEMENT),
    MotionSpec("ramp", None, SLOW_DISPLACEMENT),
    MotionSpec("ramp", None, FAST_DISPLACEMENT),
    MotionSpec("appear", None, NO_DISPLACEMENT),
    MotionSpec("disappear", None, NO_DISPLACEMENT),
]


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Class-independent look of one clip (drawn first from the clip's generator)."""

    shape: str
    colour: np.ndarray
    radius: float
    stripe_amplitude: float
    stripe_period: float
    stripe_angle: float
    stripe_phase: float
    background: np.ndarray

    def description(self) -> str:
        """Return a placeholder text such as "orange disc"."""
        return f"{hue_name(self.colour)} {self.shape}"


@dataclasses.dataclass(frozen=True)
class Motion:
    """Per-frame object centre (T, 2) in pixels, radius (T,) in pixels and visibility (T,)."""

    centre: np.ndarray
    radius: np.ndarray
    visible: np.ndarray


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """One video of the dataset: its SSv2 id, dataset label, template index, index within class, split, length."""

    video_id: str
    label: int
    template_index: int
    index: int
    split: str
    num_frames: int


def hue_name(colour: np.ndarray) -> str:
    """Name the hue of an RGB colour in [0, 1] (appearance words for placeholders only)."""
    hue, _, saturation = colorsys.rgb_to_hls(*(float(channel) for channel in colour))
    if saturation < 0.15:
        return "white"
    degrees = hue * 360.0
    for limit, name in ((15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (195, "cyan"),
                        (255, "blue"), (290, "purple"), (345, "pink")):
        if degrees < limit:
            return name
    return "red"


def clip_rng(seed: int, template_index: int, index: int) -> np.random.Generator:
    """Return the generator of clip `index` of template `template_index` (independent of any other clip)."""
    return np.random.default_rng([seed, RENDER_STREAM, template_index, index])


def fill_template(template: str, placeholders: Sequence[str]) -> str:
    """Replace each bracketed placeholder of `template` in order, giving SSv2's narration "label" text."""
    text = template
    for placeholder in placeholders:
        start, stop = text.index("["), text.index("]")
        text = text[:start] + placeholder + text[stop + 1:]
    return text


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """Draw one float uniformly from [low, high]."""
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Draw shape, colours, size and stripe texture; the same draws for every class."""
    return Appearance(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=rng.uniform(*OBJECT_CHANNEL_RANGE, size=3),
        radius=_uniform(rng, RADIUS_RANGE),
        stripe_amplitude=_uniform(rng, OBJECT_STRIPE_AMPLITUDE),
        stripe_period=_uniform(rng, OBJECT_STRIPE_PERIOD),
        stripe_angle=_uniform(rng, (0.0, np.pi)),
        stripe_phase=_uniform(rng, (0.0, 2.0 * np.pi)),
        background=rng.uniform(0.0, 1.0, size=3) * BACKGROUND_SCALE,
    )


def _time_axis(num_frames: int) -> np.ndarray:
    """Return each frame's time as a fraction of the clip, 0 for the first frame and 1 for the last."""
    return np.linspace(0.0, 1.0, num_frames)


def _time_profile(profile: str, num_frames: int, start: float, middle: float, end: float) -> np.ndarray:
    """Return the motion progress in [0, 1] at each frame for a named time profile."""
    time_axis = _time_axis(num_frames)

    def ramp(begin: float, finish: float) -> np.ndarray:
        return np.clip((time_axis - begin) / (finish - begin), 0.0, 1.0)

    if profile == "ramp":
        return ramp(start, end)
    if profile == "first_half":
        return ramp(start, middle)
    if profile == "second_half":
        return ramp(middle, end)
    if profile == "go_and_return":
        return ramp(start, middle) - ramp(middle, end)
    return np.zeros(num_frames)


def _feasible_start(rng: np.random.Generator, extent: float, shift: float, max_radius: float) -> float:
    """Draw a start coordinate so that the object stays inside [0, extent] along one axis all clip long.

    Always one draw, so that every class consumes the generator alike; centred when nothing fits.
    """
    fraction = float(rng.random())
    low = max_radius + EDGE_MARGIN - min(0.0, shift)
    high = extent - max_radius - EDGE_MARGIN - max(0.0, shift)
    if high <= low:
        return (low + high) / 2.0
    return low + fraction * (high - low)


def sample_motion(
    spec: MotionSpec, appearance: Appearance, rng: np.random.Generator, num_frames: int, width: int, height: int
) -> Motion:
    """Draw the trajectory of one clip; the same number of draws for every class."""
    scale = min(width, height) / REFERENCE_SIZE
    start, middle, end = _uniform(rng, START_RANGE), _uniform(rng, MIDDLE_RANGE), _uniform(rng, END_RANGE)
    magnitude = _uniform(rng, spec.displacement) * scale
    angle = _uniform(rng, (0.0, 2.0 * np.pi))
    zoom = _uniform(rng, ZOOM_RANGE)
    direction = spec.direction if spec.direction is not None else (np.cos(angle), np.sin(angle))
    progress = _time_profile(spec.profile, num_frames, start, middle, end)
    radius = appearance.radius * scale * zoom ** (spec.zoom * progress)
    shift_x, shift_y = magnitude * direction[0], magnitude * direction[1]
    max_radius = float(radius.max())
    start_x = _feasible_start(rng, width, shift_x, max_radius)
    start_y = _feasible_start(rng, height, shift_y, max_radius)
    centre = np.stack([start_x + shift_x * progress, start_y + shift_y * progress], axis=1)
    time_axis = _time_axis(num_frames)
    visible = np.ones(num_frames, dtype=bool)
    if spec.profile == "appear":
        visible = time_axis >= middle
    elif spec.profile == "disappear":
        visible = time_axis < middle
    return Motion(centre=centre, radius=radius, visible=visible)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Return (height, width) value noise of unit scale: a random grid of `cell`-pixel spacing, bilinearly upsampled."""
    grid_h, grid_w = int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2
    grid = rng.standard_normal((grid_h, grid_w))
    rows = np.arange(height) / cell
    cols = np.arange(width) / cell
    along_cols = np.stack([np.interp(cols, np.arange(grid_w), grid[row]) for row in range(grid_h)])
    return np.stack([np.interp(rows, np.arange(grid_h), along_cols[:, col]) for col in range(width)], axis=1)


def _background(
    appearance: Appearance, rng: np.random.Generator, width: int, height: int, textured: bool
) -> np.ndarray:
    """Return the static (H, W, 3) background: dark colour plus a faint (or, textured, a rich) pattern."""
    scale = min(width, height) / REFERENCE_SIZE
    if textured:
        pattern = sum(
            amplitude * _smooth_noise(rng, height, width, max(1.0, cell * scale / TEXTURED_SCALE))
            for cell, amplitude in RICH_TEXTURE_OCTAVES
        )
    else:
        pattern = FAINT_TEXTURE_AMPLITUDE * _smooth_noise(rng, height, width, FAINT_TEXTURE_CELL * scale)
    return appearance.background[None, None, :] + pattern[:, :, None]


def _signed_distance(shape: str, offset_x: np.ndarray, offset_y: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Approximate signed distance in pixels to the outline of a shape of half-size `radius` (negative inside)."""
    if shape == "disc":
        return np.hypot(offset_x, offset_y) - radius
    if shape == "square":
        return np.maximum(np.abs(offset_x), np.abs(offset_y)) - 0.85 * radius
    if shape == "diamond":
        return (np.abs(offset_x) + np.abs(offset_y) - 1.22 * radius) / np.sqrt(2.0)
    edge_x, edge_y = np.sqrt(3.0) / 2.0, -0.5
    distance = np.maximum(offset_y, np.maximum(edge_x * offset_x + edge_y * offset_y,
                                                -edge_x * offset_x + edge_y * offset_y))
    return distance - 0.75 * radius


def _object_layer(
    appearance: Appearance, motion: Motion, width: int, height: int, textured: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-frame coverage (T, H, W, 1) and object colour (T, H, W, 3), anti-aliased over one pixel."""
    rows = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
    cols = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
    offset_x = cols - motion.centre[:, 0, None, None].astype(np.float32)
    offset_y = rows - motion.centre[:, 1, None, None].astype(np.float32)
    radius = motion.radius[:, None, None].astype(np.float32)
    distance = _signed_distance(appearance.shape, offset_x, offset_y, radius)
    coverage = np.clip(0.5 - distance, 0.0, 1.0) * motion.visible[:, None, None]
    along = (offset_x * np.cos(appearance.stripe_angle) + offset_y * np.sin(appearance.stripe_angle)) / radius
    stripes = 0.5 + 0.5 * np.sin(2.0 * np.pi * along / appearance.stripe_period + appearance.stripe_phase)
    shading = 1.0 - appearance.stripe_amplitude * stripes
    if textured:
        across = (offset_y * np.cos(appearance.stripe_angle) - offset_x * np.sin(appearance.stripe_angle)) / radius
        hatch = 0.5 + 0.5 * np.sin(2.0 * np.pi * CROSS_HATCH_CYCLES * across)
        shading = shading * (1.0 - CROSS_HATCH_AMPLITUDE * hatch)
    colour = shading[..., None] * appearance.colour.astype(np.float32)
    return coverage[..., None].astype(np.float32), colour.astype(np.float32)


def _render(
    template_index: int, rng: np.random.Generator, num_frames: int, width: int, height: int, textured: bool
) -> tuple[np.ndarray, Appearance]:
    """Render one clip and return (uint8 frames (T, H, W, 3), its appearance)."""
    if not 0 <= template_index < len(ALL_TEMPLATES):
        raise ValueError(f"class index {template_index} out of range 0..{len(ALL_TEMPLATES) - 1}")
    if num_frames < 2 or width < MIN_SIZE or height < MIN_SIZE:
        raise ValueError(
            f"clip of {num_frames} frames at {width}x{height}: need at least 2 frames and {MIN_SIZE}x{MIN_SIZE} pixels"
        )
    appearance = sample_appearance(rng)
    motion = sample_motion(MOTIONS[template_index], appearance, rng, num_frames, width, height)
    background = _background(appearance, rng, width, height, textured).astype(np.float32)
    coverage, colour = _object_layer(appearance, motion, width, height, textured)
    frames = background[None] * (1.0 - coverage) + colour * coverage
    noise_sigma = TEXTURED_NOISE_SIGMA if textured else PIXEL_NOISE_SIGMA
    frames += noise_sigma * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.clip(frames * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8), appearance


def render_clip(
    class_index: int,
    rng: np.random.Generator,
    num_frames: int = DEFAULT_FRAMES,
    width: int = 32,
    height: int = 32,
    textured: bool = False,
) -> np.ndarray:
    """Render one synthetic clip.

    Parameters
    ----------
    class_index : int
        Index into ``ALL_TEMPLATES`` (0..11 are ``CLASS_TEMPLATES``, 12 and 13 the appear/disappear controls).
    rng : numpy.random.Generator
        The clip's generator (see :func:`clip_rng`); appearance is drawn first, so it does not depend on the class.
    num_frames, width, height : int
        Clip length and frame size; displacements and sizes scale with min(width, height) / 32.
    textured : bool
        Rich multi-scale background texture and cross-hatched objects (for realistic JPEG sizes at 427x240).

    Returns
    -------
    numpy.ndarray
        uint8 RGB frames of shape (num_frames, height, width, 3).
    """
    frames, _ = _render(class_index, rng, num_frames, width, height, textured)
    return frames


def resolve_classes(classes: int | Sequence[int] | None, controls: bool) -> list[int]:
    """Return the template indices of the dataset's classes (dataset label = position in this list)."""
    if classes is None:
        selected = list(range(len(CLASS_TEMPLATES)))
    elif isinstance(classes, int):
        if not 1 <= classes <= len(CLASS_TEMPLATES):
            raise ValueError(f"--classes {classes}: choose 1..{len(CLASS_TEMPLATES)}")
        selected = list(range(classes))
    else:
        selected = [int(index) for index in classes]
        if not selected or len(set(selected)) != len(selected) or not all(
            0 <= index < len(ALL_TEMPLATES) for index in selected
        ):
            raise ValueError(f"classes {selected}: need distinct indices in 0..{len(ALL_TEMPLATES) - 1}")
    if controls:
        selected += [index for index in range(len(CLASS_TEMPLATES), len(ALL_TEMPLATES)) if index not in selected]
    return selected


def _frame_range(num_frames: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise a fixed frame count or a (min, max) range and check it."""
    low, high = (num_frames, num_frames) if isinstance(num_frames, int) else (int(num_frames[0]), int(num_frames[1]))
    if low < 2 or high < low:
        raise ValueError(f"frames {num_frames}: need 2 <= min <= max")
    return low, high


def _split_counts(count: int, split_fractions: Sequence[float]) -> list[int]:
    """Split `count` videos into train / validation / test by rounding the first two fractions."""
    train = int(round(count * split_fractions[0]))
    validation = min(count - train, int(round(count * split_fractions[1])))
    return [train, validation, count - train - validation]


def _check_fractions(split_fractions: Sequence[float]) -> None:
    """Raise ValueError unless there are three non-negative fractions summing to 1."""
    if len(split_fractions) != 3 or min(split_fractions) < 0 or abs(sum(split_fractions) - 1.0) > 1e-6:
        raise ValueError(f"--split {list(split_fractions)}: need three non-negative fractions summing to 1")


def plan_dataset(
    videos_per_class: int,
    num_frames: int | tuple[int, int] = DEFAULT_FRAMES,
    split_fractions: Sequence[float] = DEFAULT_SPLIT,
    seed: int = 0,
    classes: int | Sequence[int] | None = None,
    controls: bool = False,
) -> list[ClipPlan]:
    """Assign every clip its id, label, split and length, deterministically from the seed.

    Ids are the strings "1".."N" shuffled over the clips (an id says nothing about the class); each class is
    split into train / validation / test by the fractions (stratified). The list is sorted by split, then id.
    """
    if videos_per_class < 1:
        raise ValueError(f"--videos-per-class {videos_per_class}: need at least 1")
    _check_fractions(split_fractions)
    low, high = _frame_range(num_frames)
    template_indices = resolve_classes(classes, controls)
    permutation = np.random.default_rng([seed, ID_STREAM]).permutation(len(template_indices) * videos_per_class)
    plans = []
    for label, template_index in enumerate(template_indices):
        order = np.random.default_rng([seed, SPLIT_STREAM, template_index]).permutation(videos_per_class)
        counts = _split_counts(videos_per_class, split_fractions)
        split_of = np.repeat(np.arange(3), counts)[np.argsort(order)]
        for index in range(videos_per_class):
            frames_rng = np.random.default_rng([seed, FRAMES_STREAM, template_index, index])
            length = int(frames_rng.integers(low, high + 1)) if high > low else low
            video_id = str(1 + int(permutation[label * videos_per_class + index]))
            plans.append(ClipPlan(video_id, label, template_index, index, SPLITS[split_of[index]], length))
    return sorted(plans, key=lambda plan: (SPLITS.index(plan.split), int(plan.video_id)))


def iter_clips(
    videos_per_class: int,
    num_frames: int | tuple[int, int] = DEFAULT_FRAMES,
    width: int = 32,
    height: int = 32,
    split_fractions: Sequence[float] = DEFAULT_SPLIT,
    seed: int = 0,
    textured: bool = False,
    classes: int | Sequence[int] | None = None,
    controls: bool = False,
    splits: Sequence[str] = SPLITS,
) -> Iterator[dict[str, Any]]:
    """Yield the raw frames of the dataset that :func:`generate_dataset` would encode, without ffmpeg.

    Yields
    ------
    dict
        {"id": str, "label": int (the dataset class, also for test clips), "template": str,
        "placeholders": [str], "split": str, "frames": uint8 (T, H, W, 3) RGB}, in the annotation files' order.
    """
    for plan in plan_dataset(videos_per_class, num_frames, split_fractions, seed, classes, controls):
        if plan.split not in splits:
            continue
        rng = clip_rng(seed, plan.template_index, plan.index)
        frames, appearance = _render(plan.template_index, rng, plan.num_frames, width, height, textured)
        yield {
            "id": plan.video_id,
            "label": plan.label,
            "template": ALL_TEMPLATES[plan.template_index],
            "placeholders": [appearance.description()],
            "split": plan.split,
            "frames": frames,
        }


def encode_webm(frames: np.ndarray, path: Path, fps: int, ffmpeg_path: str) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) as VP9 WebM at `path`, written under a temporary name and renamed.

    Raises
    ------
    RuntimeError
        If ffmpeg fails; the message names the file and ffmpeg's last error line.
    """
    encode_video(frames, path, fps, ffmpeg_path, CODEC_ARGS, "webm")


def encode_video(
    frames: np.ndarray, path: Path, fps: float, ffmpeg_path: str, codec_args: Sequence[str], container: str
) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) with `codec_args` into `container` at `path` (temporary name, renamed).

    Raises
    ------
    RuntimeError
        If ffmpeg fails; the message names the file, ffmpeg's last error line and the codec.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    height, width = frames.shape[1:3]
    command = [*_input_args(width, height, fps, ffmpeg_path), *codec_args, "-f", container, str(temporary)]
    try:
        completed = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True,
                                   check=False)
        if completed.returncode != 0:
            lines = completed.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
            codec = codec_args[list(codec_args).index("-c:v") + 1] if "-c:v" in codec_args else "its codec"
            raise RuntimeError(f"{path}: ffmpeg failed ({lines[-1]}); check that {ffmpeg_path} has {codec}")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _has_dataset(root: Path) -> bool:
    """True when `root` has a non-empty labels/ or data/ directory."""
    return any((root / sub).is_dir() and any((root / sub).iterdir()) for sub in (LABELS_SUBDIR, Path("data")))


def _clear_previous(root: Path) -> None:
    """For --force: drop the completion marker first, then this generator's label files and videos."""
    labels_dir, video_dir = root / LABELS_SUBDIR, root / VIDEO_SUBDIR
    for name in (GENERATOR_FILE, *LABEL_FILES):
        (labels_dir / name).unlink(missing_ok=True)
    if video_dir.is_dir():
        for video in video_dir.glob("*.webm"):
            video.unlink()


def _input_args(width: int, height: int, fps: float, ffmpeg_path: str) -> list[str]:
    """Return the ffmpeg command start that reads raw RGB frames of `width` x `height` at `fps` from stdin."""
    return [ffmpeg_path, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0"]


def _segment_args(lengths: Sequence[int]) -> list[str]:
    """Return the output options that cut one stream into one WebM file per clip, each starting on a keyframe."""
    bounds = [int(bound) for bound in np.cumsum(lengths)[:-1]] or [int(sum(lengths))]
    keyframes = "+".join(f"eq(n,{bound})" for bound in bounds)
    return ["-force_key_frames", f"expr:{keyframes}", "-f", "segment", "-segment_format", "webm",
            "-segment_frames", ",".join(str(bound) for bound in bounds), "-reset_timestamps", "1"]


def _feed(process: subprocess.Popen, clips: Iterable[np.ndarray], lengths: Sequence[int], shape: tuple) -> None:
    """Write each clip's raw frames to ffmpeg's stdin, checking that it has its planned length and size."""
    try:
        for frames, length in zip(clips, lengths, strict=True):
            if frames.shape != (length, *shape) or frames.dtype != np.uint8:
                raise ValueError(f"clip of shape {frames.shape} {frames.dtype}, expected uint8 {(length, *shape)}")
            process.stdin.write(np.ascontiguousarray(frames).tobytes())
    except BrokenPipeError:
        pass  # ffmpeg exited early; its exit status and stderr explain why
    finally:
        try:
            process.stdin.close()
        except BrokenPipeError:
            pass


def encode_webm_batch(
    clips: Iterable[np.ndarray], lengths: Sequence[int], paths: Sequence[Path], fps: int, ffmpeg_path: str,
    width: int, height: int,
) -> None:
    """Encode several clips with one ffmpeg process: one stream, cut at forced keyframes into one WebM per clip.

    The clips are consumed lazily (rendered while ffmpeg encodes); each output is written under a temporary name
    and renamed only when ffmpeg has finished successfully and produced exactly one file per clip.

    Raises
    ------
    RuntimeError
        If ffmpeg fails or produces another number of files; the message names the first output file.
    """
    paths = [Path(path) for path in paths]
    folder = paths[0].parent
    stem = f".batch-{paths[0].stem}-{os.getpid()}-"
    temporaries = [folder / f"{stem}{index:05d}.tmp" for index in range(len(paths))]
    command = [*_input_args(width, height, fps, ffmpeg_path), "-map", "0:v", *CODEC_ARGS, *_segment_args(lengths),
               str(folder / f"{stem}%05d.tmp")]
    try:
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                _feed(process, clips, lengths, (height, width, 3))
            finally:
                code = process.wait()
            errors.seek(0)
            lines = errors.read().decode("utf-8", "replace").strip().splitlines() or ["no message"]
        produced = sorted(folder.glob(f"{stem}*.tmp"))
        if code != 0 or produced != temporaries:
            raise RuntimeError(f"{paths[0]}: ffmpeg failed on a batch of {len(paths)} clips ({lines[-1]}); "
                               f"check that {ffmpeg_path} has libvpx-vp9")
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
    finally:
        for leftover in folder.glob(f"{stem}*.tmp"):
            leftover.unlink()


def _entry(plan: ClipPlan, appearance: Appearance) -> dict[str, Any]:
    """Return the SSv2 train/validation annotation entry of a rendered clip."""
    template = ALL_TEMPLATES[plan.template_index]
    placeholders = [appearance.description()]
    return {"id": plan.video_id, "label": fill_template(template, placeholders), "template": template,
            "placeholders": placeholders}


def _make_batch(batch: Sequence[ClipPlan], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Render a batch of planned clips straight into one ffmpeg process; return their annotation entries."""
    appearances: list[Appearance] = []

    def rendered() -> Iterator[np.ndarray]:
        for plan in batch:
            rng = clip_rng(settings["seed"], plan.template_index, plan.index)
            frames, appearance = _render(plan.template_index, rng, plan.num_frames, settings["width"],
                                         settings["height"], settings["textured"])
            appearances.append(appearance)
            yield frames

    encode_webm_batch(
        rendered(), [plan.num_frames for plan in batch],
        [settings["video_dir"] / f"{plan.video_id}.webm" for plan in batch],
        settings["fps"], settings["ffmpeg_path"], settings["width"], settings["height"],
    )
    return [_entry(plan, appearance) for plan, appearance in zip(batch, appearances)]


def batch_size(width: int, height: int) -> int:
    """Clips per ffmpeg process: BATCH_CLIPS for 32x32 clips, fewer for larger frames (down to 1 at 427x240).

    Start-up is amortised where it matters (small frames); large frames keep one clip per process so that the
    workers share the work even for small datasets.
    """
    return max(1, min(BATCH_CLIPS, BATCH_PIXELS // (width * height * DEFAULT_FRAMES)))


def _encode_all(plans: list[ClipPlan], settings: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    """Encode the plans in fixed batches (one ffmpeg process each, see :func:`batch_size`) on a pool of threads.

    The batches depend only on the plan and the frame size, never on the number of workers, so the output does
    not either.
    """
    size = batch_size(settings["width"], settings["height"])
    batches = [plans[start:start + size] for start in range(0, len(plans), size)]
    entries: list[dict[str, Any]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for done, batch_entries in enumerate(pool.map(lambda batch: _make_batch(batch, settings), batches), 1):
            entries += batch_entries
            if done % PROGRESS_EVERY == 0 or done == len(batches):
                LOGGER.info("encoded %d / %d clips", len(entries), len(plans))
    return entries


def _annotations(
    plans: list[ClipPlan], entries: list[dict[str, Any]], template_indices: list[int]
) -> dict[str, Any]:
    """Build the four SSv2 label files' contents from the plans and the encoded clips' entries."""
    labels = {template_key(ALL_TEMPLATES[index]): str(label) for label, index in enumerate(template_indices)}
    files: dict[str, Any] = {"labels.json": labels}
    for split in SPLITS:
        chosen = [entry for plan, entry in zip(plans, entries) if plan.split == split]
        files[f"{split}.json"] = [{"id": entry["id"]} for entry in chosen] if split == "test" else chosen
    return files


def _check_encoding(width: int, height: int, fps: int, workers: int | None) -> None:
    """Raise ValueError on a frame size, frame rate or worker count the generator cannot use."""
    if width < MIN_SIZE or height < MIN_SIZE:
        raise ValueError(f"--size {width}x{height}: need at least {MIN_SIZE}x{MIN_SIZE}")
    if fps < 1:
        raise ValueError(f"--fps {fps}: need at least 1")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: need at least 1")


def default_workers() -> int:
    """Return the number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _summary(
    root: Path, plans: list[ClipPlan], template_indices: list[int], settings: dict[str, Any], workers: int,
    seconds: float,
) -> dict[str, Any]:
    """Return the generator.json record: templates, counts, geometry, encoder and timing."""
    return {
        "generator_version": GENERATOR_VERSION,
        "root": str(root),
        "templates": [ALL_TEMPLATES[index] for index in template_indices],
        "num_classes": len(template_indices),
        "counts": {split: sum(plan.split == split for plan in plans) for split in SPLITS},
        "num_videos": len(plans),
        "total_frames": sum(plan.num_frames for plan in plans),
        **{key: settings[key] for key in ("width", "height", "fps", "textured", "seed")},
        "encoder_args": list(CODEC_ARGS),
        "clips_per_ffmpeg_process": batch_size(settings["width"], settings["height"]),
        "workers": workers,
        "seconds": round(seconds, 3),
        "clips_per_second": round(len(plans) / seconds, 2),
    }


def generate_dataset(
    root: str | Path,
    videos_per_class: int,
    num_frames: int | tuple[int, int] = DEFAULT_FRAMES,
    width: int = 32,
    height: int = 32,
    fps: int = DEFAULT_FPS,
    split_fractions: Sequence[float] = DEFAULT_SPLIT,
    seed: int = 0,
    textured: bool = False,
    classes: int | Sequence[int] | None = None,
    force: bool = False,
    workers: int | None = None,
    controls: bool = False,
) -> dict[str, Any]:
    """Write a synthetic SSv2-format dataset under `root` and return its summary.

    Raises
    ------
    DatasetExistsError
        If `root` already has labels/ or data/ and `force` is False.
    preprocess.ffmpeg_tools.FfmpegNotFoundError
        If no working ffmpeg is found (one line naming the binaries tried and the fix).
    ValueError
        On bad settings (fractions, frame counts, classes, sizes).
    """
    from preprocess.ffmpeg_tools import resolve_ffmpeg

    started = time.perf_counter()
    root = Path(root)
    plans = plan_dataset(videos_per_class, num_frames, split_fractions, seed, classes, controls)
    _check_encoding(width, height, fps, workers)
    if _has_dataset(root) and not force:
        raise DatasetExistsError(
            f"{root}: already holds a dataset (labels/ or data/); choose another --root or pass --force"
        )
    ffmpeg = resolve_ffmpeg()
    LOGGER.info("ffmpeg: %s (%s, from %s)", ffmpeg.path, ffmpeg.version, ffmpeg.source)
    if force:
        _clear_previous(root)
    workers = workers or default_workers()
    video_dir, labels_dir = root / VIDEO_SUBDIR, root / LABELS_SUBDIR
    video_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    settings = {"seed": seed, "width": width, "height": height, "textured": textured, "fps": fps,
                "video_dir": video_dir, "ffmpeg_path": ffmpeg.path}
    entries = _encode_all(plans, settings, workers)
    template_indices = resolve_classes(classes, controls)
    for name, payload in _annotations(plans, entries, template_indices).items():
        write_json_atomic(labels_dir / name, payload)
    summary = _summary(root, plans, template_indices, settings, workers, time.perf_counter() - started)
    summary.update(ffmpeg=ffmpeg.as_dict(), videos_per_class=videos_per_class, controls=controls,
                   num_frames=list(_frame_range(num_frames)), split_fractions=list(split_fractions))
    write_json_atomic(labels_dir / GENERATOR_FILE, summary)
    return summary


def _parse_frames(text: str) -> int | tuple[int, int]:
    """Parse "48" or "24-59"."""
    try:
        if "-" in text:
            low, high = text.split("-", 1)
            return int(low), int(high)
        return int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--frames {text!r}: use a count like 48 or a range like 24-59") from error


def _parse_size(text: str) -> tuple[int, int]:
    """Parse "WIDTHxHEIGHT"."""
    try:
        width, height = text.lower().split("x")
        return int(width), int(height)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--size {text!r}: use WIDTHxHEIGHT, e.g. 32x32 or 427x240") from error


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``python -m preprocess.synthetic``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("ssv2", *SYNTHETIC_LAYOUTS), default="ssv2",
                        help="the layout written (ssv2 here; the others: preprocess/synthetic_layouts.py)")
    parser.add_argument("--root", required=True, type=Path, help="output directory (DATA_ROOT)")
    parser.add_argument("--videos-per-class", required=True, type=int)
    parser.add_argument("--frames", type=_parse_frames, default=DEFAULT_FRAMES, help="48, or a range like 24-59")
    parser.add_argument("--size", type=_parse_size, default=None,
                        help="WIDTHxHEIGHT (default 32x32, or 427x240 with --textured)")
    parser.add_argument("--textured", action="store_true", help="rich texture for realistic JPEG sizes")
    parser.add_argument("--fps", type=int, default=None,
                        help=f"frame rate (default {DEFAULT_FPS}; k400: 24, 25 and 30 in turn; hmdb51: 30)")
    parser.add_argument("--split", type=float, nargs=3, default=list(DEFAULT_SPLIT),
                        metavar=("TRAIN", "VALIDATION", "TEST"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=None, help=f"first N classes (default {len(CLASS_TEMPLATES)})")
    parser.add_argument("--controls", action="store_true", help="add the appear / disappear control classes")
    parser.add_argument("--workers", type=int, default=None, help="parallel ffmpeg encoders (default: cores)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing dataset under --root")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the generator from the command line; print any error as one line and return non-zero."""
    from preprocess.ffmpeg_tools import FfmpegNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = args.size or (TEXTURED_SIZE if args.textured else (32, 32))
    if args.dataset != "ssv2":
        if args.textured or args.controls:
            parser.error(f"--textured and --controls apply to --dataset ssv2 only, not {args.dataset}")
        return _main_layout(args, width, height)
    args.fps = DEFAULT_FPS if args.fps is None else args.fps
    try:
        summary = generate_dataset(
            args.root, args.videos_per_class, args.frames, width, height, args.fps, args.split, args.seed,
            args.textured, args.classes, args.force, args.workers, args.controls,
        )
    except (DatasetExistsError, FfmpegNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary['num_videos']} videos ("
        + ", ".join(f"{split} {count}" for split, count in summary["counts"].items())
        + f") of {summary['num_classes']} classes to "
        f"{args.root} in {summary['seconds']:.1f} s ({summary['clips_per_second']:.1f} clips/s, "
        f"{summary['workers']} workers)"
    )
    return 0


def _main_layout(args: argparse.Namespace, width: int, height: int) -> int:
    """Write another dataset's layout (preprocess.synthetic_layouts); print one line, or the error as one line."""
    from preprocess.ffmpeg_tools import FfmpegNotFoundError
    from preprocess.synthetic_layouts import generate_layout

    try:
        summary = generate_layout(args.dataset, args.root, args.videos_per_class, args.frames, width, height, args.fps,
                                  args.split, args.seed, args.classes, args.force, args.workers)
    except (DatasetExistsError, FfmpegNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(f"wrote {summary['num_videos']} {args.dataset} videos of {summary['num_classes']} classes to {args.root} "
          f"in {summary['seconds']:.1f} s")
    if args.dataset == "tsm-list":
        root = args.root
        print(f"shard them with: make shards DATASET=tsm-list DATA_ROOT={root} SHARD_ARGS=\"--train-list "
              f"{root / 'train_list.txt'} --val-list {root / 'val_list.txt'} --test-list {root / 'test_list.txt'} "
              f"--categories {root / 'categories.txt'} --no-flip\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
