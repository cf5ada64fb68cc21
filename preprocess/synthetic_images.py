"""Single-frame appearance images: the pretraining task that plays ImageNet's role for the demo backbone.

The FFN paper starts every model (vanilla TSM, separated training, TSM-FFN) from ImageNet-pretrained ResNet-50
weights. The demo's tiny backbone has no such weights, so ``pretrain.py`` trains it on this task first: one still
image per sample, one object of some shape, size and surface texture at a random position, drawn on the same dark,
faintly textured backgrounds and with the same bright random colours as the demo videos. A class is a combination
of appearance attributes only (shape x size x texture). Nothing moves, and no class corresponds to a class of the
video task (those are motions: directions, speeds, approach, timing), so the pretrained weights know what an object
looks like and where it is, not how it moves, as an ImageNet backbone knows nothing of SSv2's actions.

The images are rendered in memory (numpy), deterministically from a seed; nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from preprocess.synthetic import (
    BACKGROUND_SCALE,
    OBJECT_CHANNEL_RANGE,
    PIXEL_NOISE_SIGMA,
    SHAPES,
    Appearance,
    Motion,
    _background,
    _object_layer,
)

IMAGE_STREAM = 7  # generator stream of the appearance images (distinct from the video generator's streams)
SIZE_RANGES = {"small": (2.0, 3.2), "large": (4.6, 7.0)}  # object half-size in pixels at 32 px
TEXTURE_AMPLITUDES = {"plain": (0.0, 0.05), "striped": (0.45, 0.6)}  # stripe contrast on the object
STRIPE_PERIOD = (0.5, 1.0)
REFERENCE_SIZE = 32.0
EDGE_MARGIN = 0.5


@dataclasses.dataclass(frozen=True)
class AppearanceClass:
    """One class of the appearance task: a shape, a size band and a surface texture."""

    shape: str
    size: str
    texture: str

    @property
    def name(self) -> str:
        """Return a readable class name such as "small striped disc"."""
        return f"{self.size} {self.texture} {self.shape}"


APPEARANCE_CLASSES: tuple[AppearanceClass, ...] = tuple(
    AppearanceClass(shape, size, texture)
    for shape, size, texture in itertools.product(SHAPES, SIZE_RANGES, TEXTURE_AMPLITUDES)
)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """Draw one float uniformly from [low, high]."""
    return float(rng.uniform(bounds[0], bounds[1]))


def render_appearance_image(class_index: int, rng: np.random.Generator, width: int = 32,
                            height: int = 32) -> np.ndarray:
    """Render one image of an appearance class.

    Parameters
    ----------
    class_index : int
        Index into ``APPEARANCE_CLASSES``.
    rng : numpy.random.Generator
        The image's generator.
    width, height : int
        Image size; object sizes scale with min(width, height) / 32.

    Returns
    -------
    numpy.ndarray
        uint8 RGB image of shape (height, width, 3).
    """
    if not 0 <= class_index < len(APPEARANCE_CLASSES):
        raise ValueError(f"appearance class {class_index} out of range 0..{len(APPEARANCE_CLASSES) - 1}")
    spec = APPEARANCE_CLASSES[class_index]
    scale = min(width, height) / REFERENCE_SIZE
    appearance = Appearance(
        shape=spec.shape,
        colour=rng.uniform(*OBJECT_CHANNEL_RANGE, size=3),
        radius=_uniform(rng, SIZE_RANGES[spec.size]),
        stripe_amplitude=_uniform(rng, TEXTURE_AMPLITUDES[spec.texture]),
        stripe_period=_uniform(rng, STRIPE_PERIOD),
        stripe_angle=_uniform(rng, (0.0, np.pi)),
        stripe_phase=_uniform(rng, (0.0, 2.0 * np.pi)),
        background=rng.uniform(0.0, 1.0, size=3) * BACKGROUND_SCALE,
    )
    radius = appearance.radius * scale
    low = radius + EDGE_MARGIN
    centre = np.array([[rng.uniform(low, max(low, width - low)), rng.uniform(low, max(low, height - low))]])
    motion = Motion(centre=centre, radius=np.array([radius]), visible=np.ones(1, dtype=bool))
    background = _background(appearance, rng, width, height, textured=False).astype(np.float32)
    coverage, colour = _object_layer(appearance, motion, width, height, textured=False)
    image = background * (1.0 - coverage[0]) + colour[0] * coverage[0]
    image += PIXEL_NOISE_SIGMA * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def appearance_dataset(images_per_class: int, seed: int, width: int = 32,
                       height: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render a balanced set of appearance images.

    Parameters
    ----------
    images_per_class : int
        Images of each class.
    seed : int
        Seed of the whole set (image i of class c has its own generator, so sets of different sizes share images).
    width, height : int
        Image size.

    Returns
    -------
    tuple of numpy.ndarray
        (images uint8 (N, H, W, 3), labels int64 (N,)), classes interleaved.
    """
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be positive, got {images_per_class}")
    count = images_per_class * len(APPEARANCE_CLASSES)
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    for position, (index, class_index) in enumerate(
            itertools.product(range(images_per_class), range(len(APPEARANCE_CLASSES)))):
        rng = np.random.default_rng([seed, IMAGE_STREAM, class_index, index])
        images[position] = render_appearance_image(class_index, rng, width, height)
        labels[position] = class_index
    return images, labels
