"""Clip-level augmentation built from timm's blocks: RandAugment, random erasing, mixup / cutmix, label smoothing.

Every transform acts on a whole clip: all its frames, and in a multi-frame-count batch all its frame counts, get the
same transform (one RandAugment draw, one erased box, one mixup partner and weight), as the official UniFormer-FFN
training applies them to the 16 + 4 + 8 frames of a sample (FFN-pytorch, ``slowfast/datasets/sth_ffn.py`` and
``tools/train_net_FFN.py``).

- `ClipRandAugment`: timm's ``rand_augment_transform`` (PIL operations), run frame by frame with the random state
  replayed from the view's seed before each frame, so every frame of the view gets the same operations and
  magnitudes. Runs on uint8 views: in the loader workers for the cpu backend, after decoding for the others
  (`augment_batch_views`); the seed of each view is drawn by the loader worker, so every backend augments alike.
- `BatchAugment`: timm's ``RandomErasing`` (pixel mode) on each clip's frames seen as one image of ``frames x 3``
  channels (one box through every frame, per-pixel normal noise), then timm's ``Mixup`` (batch mode) on the clips
  flattened the same way, with soft targets (label smoothing included); runs on the device batch in the training
  loop (engine.training's ``batch_transform``), normalised values, as the official code erases after normalising.

timm draws from Python's ``random``, NumPy's global generator and torch's CPU generator. Each call here seeds
them from its own key under one lock and restores them afterwards, so nothing outside sees a changed state and the
same seed gives the same augmentation wherever it runs. The erasing noise is drawn on the CPU (then copied to the
batch's device), so a CPU and a CUDA run erase alike.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from data_pipeline.augment import Normalisation, normalisation_tensors, normalise_into

RAND_AUGMENT_PREFIX = "rand"
RAND_AUGMENT_INTERPOLATION = Image.Resampling.BICUBIC  # the official AUG.INTERPOLATION
TRANSLATE_FRACTION = 0.45  # the official translate_const: 45% of the image's short side
AUGMENT_SEED_BOUND = 2**32
GLOBAL_RANDOM_LOCK = threading.Lock()


def check_rand_augment(config: str) -> None:
    """Raise ValueError unless `config` is a timm RandAugment configuration ("rand-m7-n4-...")."""
    if not config.startswith(RAND_AUGMENT_PREFIX + "-") and config != RAND_AUGMENT_PREFIX:
        raise ValueError(f"rand_augment={config!r}; give a timm RandAugment configuration such as "
                         "rand-m7-n4-mstd0.5-inc1")


@contextlib.contextmanager
def seeded_global_random(seed: int) -> Iterator[Callable[[], None]]:
    """Hold the lock, yield a function that seeds Python's, NumPy's and torch's CPU global generators from `seed`,
    and restore their previous states on exit."""
    with GLOBAL_RANDOM_LOCK:
        python_state, numpy_state = random.getstate(), np.random.get_state()
        torch_state = torch.get_rng_state()

        def reseed() -> None:
            random.seed(seed)
            np.random.seed(seed % AUGMENT_SEED_BOUND)
            torch.default_generator.manual_seed(seed)

        try:
            yield reseed
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            torch.set_rng_state(torch_state)


def derived_seed(*key: int) -> int:
    """A seed in [0, 2**32) derived from integers (e.g. run seed, rank, epoch, step, micro-batch)."""
    return int(np.random.SeedSequence([int(part) for part in key]).generate_state(1)[0])


class ClipRandAugment:
    """timm's RandAugment with one draw per view: the same operations on every frame.

    Parameters
    ----------
    config : str
        timm's configuration string, e.g. "rand-m7-n4-mstd0.5-inc1" (the official UniFormer recipe).
    image_size : int
        Side of the views it runs on (sets timm's ``translate_const`` to 45% of it, as the official code does
        for its frames).
    """

    def __init__(self, config: str, image_size: int) -> None:
        check_rand_augment(config)
        from timm.data.auto_augment import rand_augment_transform

        hparams = {"translate_const": int(image_size * TRANSLATE_FRACTION),
                   "interpolation": RAND_AUGMENT_INTERPOLATION}
        self.config = config
        self.transform = rand_augment_transform(config, hparams)

    def __call__(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment uint8 frames (N, 3, H, W) on the CPU with the draw of `seed`; return uint8 (N, 3, H, W)."""
        images = [Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy()) for frame in frames]
        augmented = []
        with seeded_global_random(seed) as reseed:
            for image in images:
                reseed()
                augmented.append(np.asarray(self.transform(image), dtype=np.uint8))
        return torch.from_numpy(np.stack(augmented)).permute(0, 3, 1, 2)


def augment_batch_views(batch: dict[str, Any], augment: ClipRandAugment,
                        normalisation: Normalisation | None = None) -> dict[str, Any]:
    """Apply `augment` to every view of a decoded batch in place, with the seeds the loader drew for its videos.

    The batch's "augment_seeds" (one list of per-view seeds per video) is consumed. uint8 views (the cpu
    backend's hand-over) are augmented as they are; float views (normalised with `normalisation`, RGB) are
    turned back into their uint8 pixels (exact: the normalisation is undone and rounded), augmented and
    normalised again on their device with the loader's arithmetic.
    """
    seeds = batch.pop("augment_seeds", None)
    if seeds is None:
        return batch
    views = int(batch.get("views", 1))
    tensors = None
    for frames, videos in batch["videos"].items():
        if videos.is_floating_point() and tensors is None:
            tensors = normalisation_tensors(videos.device, normalisation or Normalisation())
        for video, view_seeds in enumerate(seeds):
            for view, seed in enumerate(view_seeds):
                target = videos[video * views + view]
                _augment_view(target, augment, int(seed), tensors)
    return batch


def _augment_view(target: torch.Tensor, augment: ClipRandAugment, seed: int,
                  tensors: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Augment one view (T, 3, H, W) in place (uint8, or float normalised with `tensors`)."""
    if not target.is_floating_point():
        target.copy_(augment(target.cpu(), seed))
        return
    mean, std = tensors
    pixels = torch.round(target * std + mean).clamp_(0, 255).to(torch.uint8).cpu()
    normalise_into(target, augment(pixels, seed).to(target.device), mean, std)


class BatchAugment:
    """Random erasing and mixup / cutmix with label smoothing on a training batch {T: videos} (see the module
    docstring); the batch transform of engine.training.train_one_epoch.

    Parameters
    ----------
    num_classes : int
        Width of the soft targets.
    seed, rank : int
        With the call's key (epoch, step, micro-batch) they fix every draw.
    erasing : float
        Probability of erasing one box through a clip's frames (0: off; the official UniFormer recipe 0.25).
    mixup, cutmix : float
        Beta parameters of mixup and cutmix (0: off; official 0.8 and 1.0).
    switch_prob : float
        Probability of cutmix instead of mixup when both are on (0.5).
    label_smoothing : float
        Label smoothing of the targets (official 0.1).
    """

    def __init__(self, num_classes: int, seed: int = 0, rank: int = 0, erasing: float = 0.0, mixup: float = 0.0,
                 cutmix: float = 0.0, switch_prob: float = 0.5, label_smoothing: float = 0.0) -> None:
        from timm.data import Mixup
        from timm.data.random_erasing import RandomErasing

        self.num_classes, self.seed, self.rank = int(num_classes), int(seed), int(rank)
        self.label_smoothing = float(label_smoothing)
        self.eraser = RandomErasing(erasing, mode="pixel", max_count=1, device="cpu") if erasing > 0 else None
        self.mixer = None
        if mixup > 0 or cutmix > 0:
            self.mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=switch_prob,
                               mode="batch", label_smoothing=label_smoothing, num_classes=self.num_classes)

    @property
    def active(self) -> bool:
        """True when it changes anything (erasing, mixing or smoothing)."""
        return self.eraser is not None or self.mixer is not None or self.label_smoothing > 0

    def __call__(self, videos_by_frames: dict[int, torch.Tensor], labels: torch.Tensor,
                 key: Sequence[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Return the augmented clips {T: videos} and soft targets (N, num_classes) for class labels (N,)."""
        from timm.data.mixup import mixup_target

        order = clip_frame_order(videos_by_frames)
        clips = torch.cat([videos_by_frames[frames] for frames in order], dim=1)  # (N, sum T, 3, H, W)
        count, length, channels, height, width = clips.shape
        flat = clips.view(count, length * channels, height, width)
        targets = None
        with seeded_global_random(derived_seed(self.seed, self.rank, *key)) as reseed:
            reseed()
            if self.eraser is not None:
                for clip in flat:
                    self.eraser(clip)
            if self.mixer is not None:
                flat, targets = self.mixer(flat, labels)
        if targets is None:
            targets = mixup_target(labels, self.num_classes, 1.0, self.label_smoothing)
        pieces = torch.split(flat.view(count, length, channels, height, width), order, dim=1)
        return {frames: piece.contiguous() for frames, piece in zip(order, pieces)}, targets


def clip_frame_order(videos_by_frames: dict[int, torch.Tensor]) -> list[int]:
    """The order a clip's frame counts are concatenated in: the highest first, then ascending (16, 4, 8)."""
    counts = sorted(videos_by_frames)
    return [counts[-1], *counts[:-1]]
