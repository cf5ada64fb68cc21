"""Decoding backends behind one interface: the `Decoder` protocol and the `DECODERS` registry.

Every backend takes the same `SelectedSample` objects (the sampled JPEG bytes, the frame plan and the crop boxes)
through one method, `decode(samples) -> (batch, replaced)`. It writes every video straight into the preallocated
batch layout {T: (B*V, T, 3, S, S)} and replaces each video with a corrupt JPEG by another good video of the
batch (`finish_batch`), so batch sizes and counts never change.

- cpu (`CpuDecoder`, runs in the loader workers): torchvision.io.decode_jpeg (PIL when it refuses a frame) and
  torch crop/resize on the CPU. In the loader it hands over uint8 pixels (a quarter of the bytes of float), which
  the loader normalises on its device; built with normalise=True it returns the normalised float batch itself.
- torchvision (`TorchvisionDecoder`, main process): batched torchvision.io.decode_jpeg on the device, then the
  same torch crop/resize/normalise.
- dali (`DaliDecoder`, main process): DALI's fn.decoders.image, crop, bilinear resize and normalise. DALI is
  imported lazily.

A new backend is a class with `name`, `in_worker`, `needs_cuda`, `available()` and `decode`, constructed as
``cls(device, max_frames, normalisation)``, and one entry in `DECODERS`; `choose_backend` resolves "auto" from the
registry's order and `make_decoder` builds one.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
import torchvision.io  # imported here, not in each forked loader worker (a lazy import there costs seconds)

from data_pipeline.augment import (
    IMAGENET_NORMALISATION,
    Normalisation,
    allocate_views,
    normalisation_tensors,
    render_views,
)
from data_pipeline.jpeg_header import headers_fit
from data_pipeline.sampling import clip_gathers
from data_pipeline.stream import SelectedSample

LOGGER = logging.getLogger(__name__)
DALI_INPUTS = ("jpegs", "starts", "shapes", "mirror")
DALI_DEFAULT_THREADS = 4
DALI_HW_DECODER_LOAD = 0.65


@runtime_checkable
class Decoder(Protocol):
    """One decode backend: turns a batch of selected samples into the batch layout.

    Attributes
    ----------
    name : str
        The registry name (`DECODERS`), as given to build_loader(decode=...) and reported in the loader's stats.
    in_worker : bool
        True: runs in the loader workers, on the CPU (the loader moves its batch to the device and normalises
        uint8 pixels there). False: runs in the main process on its device, `prefetch` batches ahead; the workers
        check every kept JPEG's header for it (`SelectedSample.header_ok`).
    needs_cuda : bool
        True when the loader may only choose it for a CUDA device (the class itself also runs on the CPU, which
        is how the tests run it).
    """

    name: ClassVar[str]
    in_worker: ClassVar[bool]
    needs_cuda: ClassVar[bool]

    @staticmethod
    def available() -> bool:
        """True when the backend's libraries import here."""

    def decode(self, samples: Sequence[SelectedSample]) -> tuple[dict[str, Any], int]:
        """Decode and augment a batch: (batch, number of corrupt videos replaced by good ones of the batch).

        The batch is {"videos": {T: (B*V, T, 3, S, S)}, "label": long (B,), "id": list, "views": V}; frames are
        float normalised with the ImageNet mean/std, or uint8 pixels from an in-worker decoder built to hand them
        over.
        """


class CorruptFrameError(ValueError):
    """A JPEG frame could not be decoded or has the wrong size."""


def decode_jpeg_pil(jpeg: bytes) -> np.ndarray:
    """Decode one JPEG at full resolution with PIL; return uint8 (H, W, 3). Raise CorruptFrameError on failure."""
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            return np.asarray(rgb)
    except (OSError, ValueError, SyntaxError) as error:
        raise CorruptFrameError(str(error)) from error


def decode_video_cpu(sample: SelectedSample) -> list[torch.Tensor]:
    """Decode a sample's unique frames on the CPU, uint8 (3, H, W) each; raise CorruptFrameError if any fails.

    torchvision.io.decode_jpeg on the list (libjpeg-turbo, faster than PIL; simplejpeg was barely faster still,
    not worth a dependency); PIL when torchvision refuses a frame (PIL then names the
    problem or decodes what torchvision would not). Full resolution always. Frames come back as (3, H, W) views
    of (H, W, 3) memory, the layout augment.crop_frames resizes fastest.
    """
    try:
        frames = decode_jpegs_torchvision(sample.jpegs, torch.device("cpu"))
    except RuntimeError:
        frames = [torch.from_numpy(decode_jpeg_pil(jpeg)).permute(2, 0, 1) for jpeg in sample.jpegs]
    if not frames_fit(frames, sample):
        raise CorruptFrameError(f"a frame is not {sample.width}x{sample.height} RGB")
    return frames


def frames_fit(frames: Sequence[torch.Tensor], sample: SelectedSample) -> bool:
    """True when every decoded frame is (3, height, width) of the sample."""
    return all(tuple(frame.shape) == (3, sample.height, sample.width) for frame in frames)


def decode_jpegs_torchvision(jpegs: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """Decode JPEGs with torchvision on `device` (RGB, (3, H, W) uint8 each)."""
    encoded = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in jpegs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torchvision.io.decode_jpeg(encoded, mode=torchvision.io.ImageReadMode.RGB, device=device)


def log_corrupt(sample: SelectedSample, reason: Any) -> None:
    """Log one corrupt video (it is replaced by another video of its batch)."""
    LOGGER.warning("video %s: corrupt JPEG frame (%s); replaced by another video of the batch", sample.video_id, reason)


def batch_geometry(samples: Sequence[SelectedSample]) -> tuple[list[int], int, tuple[int, int]]:
    """Return (the frame counts of its layout, views per video, output size) of a batch."""
    first = samples[0]
    views = len(first.boxes) * len(first.plan.positions)
    return list(first.plan.positions[0].keys()), views, (first.boxes[0].out_height, first.boxes[0].out_width)


def slot(outputs: dict[int, torch.Tensor], index: int, views: int) -> dict[int, torch.Tensor]:
    """The views of video `index` inside the batch layout (contiguous slices, written in place)."""
    return {frames: tensor[index * views : (index + 1) * views] for frames, tensor in outputs.items()}


class CpuDecoder:
    """Decode and augment a batch on the CPU (in the loader workers), replacing corrupt videos.

    A worker's decoder remembers the last good video it decoded (`fallback`) and decodes it into the first slot
    when every video of a batch is corrupt.

    Parameters
    ----------
    device : torch.device or str
        Unused (the work is on the CPU; the loader moves the batch to its device); part of the registry's
        constructor signature.
    max_frames : int, optional
        Unused; part of the registry's constructor signature.
    normalisation : Normalisation
        The mean and std of float frames (`normalise`).
    normalise : bool
        True: float frames normalised with `normalisation`. False (the loader's setting): the resized uint8
        frames, a quarter of the bytes to hand between processes and to the device, normalised there by
        augment.normalise_views with the same arithmetic.
    """

    name = "cpu"
    in_worker = True
    needs_cuda = False

    def __init__(
        self, device: torch.device | str = "cpu", max_frames: int | None = None,
        normalisation: Normalisation = IMAGENET_NORMALISATION, normalise: bool = False,
    ) -> None:
        self.normalise = normalise
        self.mean, self.std = normalisation_tensors("cpu", normalisation)
        self.fallback: SelectedSample | None = None

    @staticmethod
    def available() -> bool:
        """Always: torchvision and PIL are requirements."""
        return True

    def decode(self, samples: Sequence[SelectedSample]) -> tuple[dict[str, Any], int]:
        """Decode and augment a batch into the batch layout on the CPU; (batch, videos replaced)."""
        batch_frames, views, size = batch_geometry(samples)
        dtype = torch.float32 if self.normalise else torch.uint8
        outputs = allocate_views(batch_frames, len(samples), views, size, dtype=dtype)
        samples = list(samples)
        good = [self._into(sample, slot(outputs, index, views)) for index, sample in enumerate(samples)]
        if not any(good) and self.fallback is not None and self._into(self.fallback, slot(outputs, 0, views)):
            samples[0], good[0] = self.fallback, True
        batch, replaced = finish_batch(samples, outputs, good, views)
        self.fallback = next((sample for sample in samples if sample.video_id in batch["id"]), self.fallback)
        return batch, replaced

    def _into(self, sample: SelectedSample, outputs: dict[int, torch.Tensor]) -> bool:
        """Decode one video and write its views into `outputs`; False when a frame is corrupt."""
        try:
            frames = decode_video_cpu(sample)
        except CorruptFrameError as error:
            log_corrupt(sample, error)
            return False
        render_views(frames, sample.boxes, sample.plan.positions, self.mean, self.std, outputs)
        return True


def finish_batch(
    samples: Sequence[SelectedSample], outputs: dict[int, torch.Tensor], good: Sequence[bool], views: int
) -> tuple[dict[str, Any], int]:
    """Copy a good video over every corrupt slot (the next good one, cyclically) and add labels and ids.

    Raises
    ------
    CorruptFrameError
        If no video of the batch is good.
    """
    good_indices = [index for index, flag in enumerate(good) if flag]
    if not good_indices:
        raise CorruptFrameError(
            f"every video of a batch is corrupt (first: {samples[0].video_id}); run `make verify-shards "
            "VERIFY_ARGS=--full-decode` and rebuild the bad shards"
        )
    chosen = list(samples)
    for index, flag in enumerate(good):
        if flag:
            continue
        donor = next((candidate for candidate in good_indices if candidate > index), good_indices[0])
        chosen[index] = samples[donor]
        for tensor in outputs.values():
            tensor[index * views : (index + 1) * views].copy_(tensor[donor * views : (donor + 1) * views])
    batch = {
        "videos": outputs,
        "label": torch.tensor([sample.label for sample in chosen], dtype=torch.long),
        "id": [sample.video_id for sample in chosen],
        "views": views,
    }
    if chosen[0].augment_seeds is not None:
        batch["augment_seeds"] = [list(sample.augment_seeds) for sample in chosen]
    return batch, len(good) - len(good_indices)


def dali_available() -> bool:
    """True when nvidia.dali imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class TorchvisionDecoder:
    """Batched torchvision.io.decode_jpeg on the device, then the shared torch crop/resize/normalise (float).

    Parameters
    ----------
    device : torch.device
        A CUDA device (nvJPEG decode), or the CPU (used by the tests).
    max_frames : int, optional
        Unused; part of the registry's constructor signature.
    normalisation : Normalisation
        The mean and std the float frames are normalised with.
    """

    name = "torchvision"
    in_worker = False
    needs_cuda = True

    def __init__(self, device: torch.device, max_frames: int | None = None,
                 normalisation: Normalisation = IMAGENET_NORMALISATION) -> None:
        self.device = torch.device(device)
        self.mean, self.std = normalisation_tensors(self.device, normalisation)

    @staticmethod
    def available() -> bool:
        """Always: torchvision is a requirement."""
        return True

    def _decode(self, jpegs: Sequence[bytes]) -> list[torch.Tensor]:
        """Decode a list of JPEGs on the device, (3, H, W) uint8 each.

        On CUDA the current stream is drained first: torchvision's nvJPEG path writes its output from a private
        stream not ordered after the caller's, so it can overwrite a freed block that kernels queued on the
        caller's stream still read (pytorch/vision#9606). Under the loader's prefetch thread the current stream
        is the thread's side stream, so only that thread waits.
        """
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return decode_jpegs_torchvision(jpegs, self.device)

    def _decode_videos(self, samples: Sequence[SelectedSample]) -> list[list[torch.Tensor] | None]:
        """Decode every video's frames in one call; on failure video by video (None for a corrupt one).

        Videos whose headers failed the worker's check are left out of the call (None).
        """
        bad = find_corrupt_headers(samples)
        readable = [sample for index, sample in enumerate(samples) if index not in bad]
        try:
            decoded = self._decode([jpeg for sample in readable for jpeg in sample.jpegs]) if readable else []
        except RuntimeError:
            return [None if index in bad else self._decode_or_none(sample) for index, sample in enumerate(samples)]
        per_video, start = [], 0
        for index, sample in enumerate(samples):
            if index in bad:
                per_video.append(None)
                continue
            frames = decoded[start : start + len(sample.jpegs)]
            start += len(sample.jpegs)
            per_video.append(frames if frames_fit(frames, sample) else None)
        return per_video

    def _decode_or_none(self, sample: SelectedSample) -> list[torch.Tensor] | None:
        """Decode one video's frames, None when any fails or has the wrong size."""
        try:
            frames = self._decode(sample.jpegs)
        except RuntimeError:
            return None
        return frames if frames_fit(frames, sample) else None

    def decode(self, samples: Sequence[SelectedSample]) -> tuple[dict[str, Any], int]:
        """Decode and augment a batch into the batch layout on the device; (batch, videos replaced)."""
        batch_frames, views, size = batch_geometry(samples)
        outputs = allocate_views(batch_frames, len(samples), views, size, self.device)
        good = []
        for index, (sample, frames) in enumerate(zip(samples, self._decode_videos(samples))):
            if frames is None:
                log_corrupt(sample, "torchvision could not decode it")
                good.append(False)
                continue
            render_views(frames, sample.boxes, sample.plan.positions, self.mean, self.std, slot(outputs, index, views))
            good.append(True)
        return finish_batch(samples, outputs, good, views)


def dali_layout(samples: Sequence[SelectedSample]) -> tuple[list[tuple[int, int, Any]], dict[int, list[np.ndarray]]]:
    """Flatten a batch for DALI: one DALI sample per (video, clip, crop, needed frame).

    Returns
    -------
    (list, dict)
        The flat entries (video index, frame position in the video's jpegs, crop box) and, per frame count, the flat
        index arrays of each output view, in batch order (video-major, then clip, then crop).
    """
    entries: list[tuple[int, int, Any]] = []
    gathers: dict[int, list[np.ndarray]] = {}
    for video_index, sample in enumerate(samples):
        for clip in sample.plan.positions:
            needed, local = clip_gathers(clip)
            for box in sample.boxes:
                base = len(entries)
                entries.extend((video_index, int(position), box) for position in needed)
                for frames, gather in local.items():
                    gathers.setdefault(frames, []).append(base + gather)
    return entries, gathers


class DaliDecoder:
    """DALI decode + crop + bilinear resize (no antialias) + normalise, one DALI sample per frame.

    Frames of a video are decoded once per view (once in training). A video whose JPEG headers failed the loader
    worker's check (`SelectedSample.header_ok`) is left out before DALI runs; should DALI still fail, the batch is
    retried video by video.

    Parameters
    ----------
    device : torch.device
        A CUDA device (mixed decode on the GPU), or CPU (DALI's CPU mode, used by the tests).
    max_frames : int
        Largest number of frames in one batch (the DALI pipeline's max_batch_size).
    normalisation : Normalisation
        The mean and std the float frames are normalised with.
    num_threads : int
        DALI CPU threads.
    """

    name = "dali"
    in_worker = False
    needs_cuda = True

    def __init__(self, device: torch.device, max_frames: int, normalisation: Normalisation = IMAGENET_NORMALISATION,
                 num_threads: int = DALI_DEFAULT_THREADS) -> None:
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        self.max_frames = int(max_frames)
        self.normalisation = normalisation
        self.num_threads = num_threads
        self.pipelines: dict[tuple[int, int], Any] = {}

    @staticmethod
    def available() -> bool:
        """True when nvidia.dali imports."""
        return dali_available()

    def _pipeline(self, out_height: int, out_width: int) -> Any:
        """Build (once per output size) the DALI pipeline."""
        key = (out_height, out_width)
        if key not in self.pipelines:
            self.pipelines[key] = build_dali_pipeline(
                self.max_frames, self.num_threads, self._device_id(), out_height, out_width, self.normalisation
            )
        return self.pipelines[key]

    def _device_id(self) -> int | None:
        """The CUDA device index, or None for DALI's CPU mode."""
        if not self.on_gpu:
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def run_flat(self, entries: list[tuple[int, int, Any]], samples: Sequence[SelectedSample]) -> torch.Tensor:
        """Run the pipeline over flat entries; return float (N, 3, S, S) on the decoder's device."""
        if len(entries) > self.max_frames:
            raise ValueError(f"{len(entries)} frames in one batch but the DALI pipeline holds {self.max_frames}")
        box = entries[0][2]
        pipeline = self._pipeline(box.out_height, box.out_width)
        jpegs = [np.frombuffer(samples[video].jpegs[position], dtype=np.uint8) for video, position, _ in entries]
        starts = [np.array([entry[2].x, entry[2].y], dtype=np.int32) for entry in entries]
        shapes = [np.array([entry[2].width, entry[2].height], dtype=np.int32) for entry in entries]
        mirror = [np.array(int(entry[2].flip), dtype=np.int32) for entry in entries]
        for name, data in zip(DALI_INPUTS, (jpegs, starts, shapes, mirror)):
            pipeline.feed_input(name, data)
        (output,) = pipeline.run()
        return dali_to_torch(output, self.device)

    def _good_views(self, samples: Sequence[SelectedSample]) -> tuple[list[int], dict[int, torch.Tensor] | None]:
        """Run DALI on the videos that pass the header check: (their batch indices, {T: (G*V, T, 3, S, S)})."""
        bad = find_corrupt_headers(samples)
        good_indices = [index for index in range(len(samples)) if index not in bad]
        if not good_indices:
            return [], None
        good = [samples[index] for index in good_indices]
        entries, gathers = dali_layout(good)
        flat = self.run_flat(entries, good)
        views = {
            frames: flat.index_select(0, torch.as_tensor(np.concatenate(indices), device=flat.device)).view(
                -1, frames, *flat.shape[1:]
            )
            for frames, indices in gathers.items()
        }
        return good_indices, views

    def decode(self, samples: Sequence[SelectedSample]) -> tuple[dict[str, Any], int]:
        """Decode and augment a batch into the batch layout on the device; (batch, videos replaced)."""
        batch_frames, views, size = batch_geometry(samples)
        try:
            good_indices, good_views = self._good_views(samples)
        except RuntimeError:
            return self._batch_one_by_one(samples)
        outputs = allocate_views(batch_frames, len(samples), views, size, self.device)
        if good_views is not None:
            slots = torch.as_tensor(
                [index * views + view for index in good_indices for view in range(views)], device=self.device
            )
            for frames, tensor in good_views.items():
                outputs[frames].index_copy_(0, slots, tensor)
        good = [index in good_indices for index in range(len(samples))]
        for index, flag in enumerate(good):
            if not flag:
                log_corrupt(samples[index], "unreadable JPEG header")
        return finish_batch(samples, outputs, good, views)

    def _batch_one_by_one(self, samples: Sequence[SelectedSample]) -> tuple[dict[str, Any], int]:
        """After a DALI error: decode video by video, replacing those that fail."""
        batch_frames, views, size = batch_geometry(samples)
        outputs = allocate_views(batch_frames, len(samples), views, size, self.device)
        good = []
        for index, sample in enumerate(samples):
            video = self._video_or_none(sample)
            good.append(video is not None)
            if video is None:
                log_corrupt(sample, "DALI could not decode it")
                continue
            for frames, tensor in video.items():
                outputs[frames][index * views : (index + 1) * views].copy_(tensor)
        return finish_batch(samples, outputs, good, views)

    def _video_or_none(self, sample: SelectedSample) -> dict[int, torch.Tensor] | None:
        """One video through DALI, None when it fails."""
        try:
            _, views = self._good_views([sample])
        except RuntimeError:
            return None
        return views


def header_ok(sample: SelectedSample) -> bool:
    """The loader worker's header verdict; for a sample built outside the loader, the same check made here."""
    if sample.header_ok is not None:
        return sample.header_ok
    return headers_fit(sample.jpegs, sample.width, sample.height)


def find_corrupt_headers(samples: Sequence[SelectedSample]) -> set[int]:
    """Return the batch indices of videos whose JPEG headers are unreadable or of the wrong size.

    Reads `SelectedSample.header_ok`, set by the loader workers: no parsing in the main process for loader
    batches.
    """
    return {index for index, sample in enumerate(samples) if not header_ok(sample)}


def build_dali_pipeline(max_frames: int, num_threads: int, device_id: int | None, out_height: int, out_width: int,
                        normalisation: Normalisation = IMAGENET_NORMALISATION):
    """Build the DALI pipeline: external JPEGs and crop windows -> decode -> crop -> linear resize -> normalise.

    Decode runs on the GPU (device="mixed", hardware decoder share DALI_HW_DECODER_LOAD) when device_id is set,
    on the CPU otherwise (CI runs this CPU mode; the graph is otherwise the same). Resize is INTERP_LINEAR without
    antialias, matching torch's bilinear (align_corners=False, antialias=False).
    """
    from nvidia.dali import fn, pipeline_def, types

    rgb_mean, rgb_std = normalisation.rgb_mean_std()
    mean = [channel * 255.0 for channel in rgb_mean]
    std = [channel * 255.0 for channel in rgb_std]
    on_gpu = device_id is not None

    @pipeline_def(batch_size=max_frames, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1)
    def frame_pipeline():
        jpegs = fn.external_source(name="jpegs", dtype=types.UINT8)
        starts = fn.external_source(name="starts", dtype=types.INT32)
        shapes = fn.external_source(name="shapes", dtype=types.INT32)
        mirror = fn.external_source(name="mirror", dtype=types.INT32)
        if on_gpu:
            images = fn.decoders.image(
                jpegs, device="mixed", output_type=types.RGB, hw_decoder_load=DALI_HW_DECODER_LOAD
            )
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        images = fn.slice(images, start=starts, shape=shapes, axis_names="WH")
        images = fn.resize(
            images, resize_x=float(out_width), resize_y=float(out_height), interp_type=types.INTERP_LINEAR,
            antialias=False,
        )
        return fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std, mirror=mirror
        )

    pipeline = frame_pipeline()
    pipeline.build()
    return pipeline


def dali_to_torch(output: Any, device: torch.device) -> torch.Tensor:
    """Copy a dense DALI TensorList (CPU or GPU) into a torch tensor on `device`."""
    dense = output.as_tensor()
    if device.type != "cuda":
        return torch.from_numpy(np.array(dense))
    from nvidia.dali.plugin.pytorch import feed_ndarray

    target = torch.empty(dense.shape(), dtype=torch.float32, device=device)
    feed_ndarray(dense, target, cuda_stream=torch.cuda.current_stream(device))
    return target


DECODERS: dict[str, type] = {"dali": DaliDecoder, "torchvision": TorchvisionDecoder, "cpu": CpuDecoder}
"""The decode backends by name, in the order "auto" prefers them (the first available one the device allows)."""
BACKENDS = ("auto", *DECODERS)


def choose_backend(requested: str, device: torch.device) -> str:
    """Resolve a backend name: "auto" is the first of `DECODERS` that is available and allowed on `device`.

    Raises
    ------
    ValueError
        For an unknown backend, or a CUDA-only backend asked for on a non-CUDA device.
    """
    if requested not in BACKENDS:
        raise ValueError(f"decode={requested!r}; use one of {BACKENDS}")
    on_cuda = device.type == "cuda" and torch.cuda.is_available()
    if requested == "auto":
        return next(name for name, cls in DECODERS.items() if (on_cuda or not cls.needs_cuda) and cls.available())
    if DECODERS[requested].needs_cuda and not on_cuda:
        raise ValueError(f"decode={requested!r} needs a CUDA device (got {device}); use --decode cpu or auto")
    return requested


def make_decoder(name: str, device: torch.device, max_frames: int,
                 normalisation: Normalisation = IMAGENET_NORMALISATION) -> Decoder:
    """Build the backend `name` of `DECODERS` for `device`, sized for batches of up to `max_frames` frames, its
    float frames normalised with `normalisation` (RGB order; the loader reverses the channels of a BGR model)."""
    return DECODERS[name](torch.device(device), max_frames, normalisation)


__all__ = [
    "BACKENDS",
    "DECODERS",
    "CorruptFrameError",
    "CpuDecoder",
    "DaliDecoder",
    "Decoder",
    "TorchvisionDecoder",
    "choose_backend",
    "decode_video_cpu",
    "finish_batch",
    "make_decoder",
]

