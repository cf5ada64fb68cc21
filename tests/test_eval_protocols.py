"""The evaluation views against the official test chain, rebuilt here from its documented behaviour.

The official chain (TSM's ops/transforms.py and test_models.py, FFN's main_FFN.py): PIL frames -> GroupScale (short
side 256, PIL bilinear) -> torchvision CenterCrop or TSM's GroupFullResSample -> Stack -> ToTorchFormatTensor(div)
-> GroupNormalize, on the frame indices of the script's sampler. On shards of real JPEG frames stored at 455x256
(what `make shards` and the official extraction write) the cpu backend's views hold exactly the official pixels; on
frames stored at other sizes the difference is measured and bounded (docs/evaluation_protocols.md).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_helpers import make_videos

from data_pipeline import build_loader
from data_pipeline.augment import IMAGENET_MEAN, IMAGENET_STD
from data_pipeline.decode import CpuDecoder, TorchvisionDecoder
from data_pipeline.loader import PipelineConfig, select_sample
from data_pipeline.stream import iterate_tar, parse_meta, read_split, slice_frames

RATES = (4, 8)
FRAME_COUNTS = (20, 8, 5)  # longer than, equal to and shorter than the largest rate
NUM_VIDEOS = 3
SCALE_SIZE = 256
CROP_SIZE = 224
NATIVE_SIZE = (455, 256)
GOLDEN_RATE = 4
# Normalised values: ours computes (x - 255 m) / (255 s), the official (x / 255 - m) / s; the float32 results
# differ by at most 2 ulp (2.4e-7 measured over all 256 levels and the 3 channels), never by a pixel.
NORMALISE_ATOL = 4e-7
# Frames stored at other sizes (crop-then-resize without antialiasing against PIL's resize-then-crop): bounds on
# the mean |diff| (0-255) over the view pixels, measured 1.1-1.8 (640x360) and 0.29-0.44 (427x240), and on the
# golden model's logits (relative L2); see docs/evaluation_protocols.md.
OTHER_SIZE_MEAN_ABS_LIMITS = {"large": 2.5, "small": 0.75}
OTHER_SIZE_LOGITS_L2_LIMIT = 0.05


@dataclass(frozen=True)
class Protocol:
    """One official test protocol and the flags that select it here."""

    name: str
    crops: int
    clips: int
    full_res: bool
    short_video: str

    @property
    def crop_size(self) -> int:
        """TSM's --full_res crops at the scale size (input_size = scale_size)."""
        return SCALE_SIZE if self.full_res else CROP_SIZE


PROTOCOLS = (
    Protocol("ffn_centre_crop", 1, 1, False, "official"),  # main_FFN.py --evaluate (val sampler)
    Protocol("tsm_test_crops_1", 1, 1, False, "segments"),  # test_models.py --test_crops 1
    Protocol("tsm_test_crops_1_full_res", 1, 1, True, "segments"),
    Protocol("tsm_test_crops_3", 3, 1, False, "segments"),  # GroupFullResSample(224, 256)
    Protocol("tsm_test_crops_3_full_res", 3, 1, True, "segments"),  # GroupFullResSample(256, 256)
    Protocol("tsm_twice_sample", 1, 2, False, "segments"),
    Protocol("tsm_test_crops_3_twice_sample_full_res", 3, 2, True, "segments"),  # TSM README's SSv2 numbers
)


# ---- the official chain, written from its documented behaviour ----


def official_indices(num_frames: int, num_segments: int, protocol: Protocol) -> list[int]:
    """0-based frame indices: the segment centres (then starts, twice_sample); FFN's val sampler zeros n <= T."""
    if protocol.short_video == "official" and num_frames <= num_segments:
        return [0] * num_segments * protocol.clips
    tick = num_frames / float(num_segments)
    indices = [int(tick / 2.0 + tick * index) for index in range(num_segments)]
    if protocol.clips == 2:
        indices += [int(tick * index) for index in range(num_segments)]
    return indices


def group_scale(images: list[Image.Image], size: int) -> list[Image.Image]:
    """torchvision Resize(size) on PIL: short side -> size, long side int(size * long / short), PIL bilinear."""
    width, height = images[0].size
    if width <= height:
        target = (size, int(size * height / width))
    else:
        target = (int(size * width / height), size)
    if target == (width, height):
        return images
    return [image.resize(target, Image.BILINEAR) for image in images]


def group_centre_crop(images: list[Image.Image], size: int) -> list[Image.Image]:
    """torchvision CenterCrop(size): top-left at int(round((W - size) / 2.0)), Python rounding."""
    width, height = images[0].size
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return [image.crop((left, top, left + size, top + size)) for image in images]


def group_full_res_sample(images: list[Image.Image], crop: int, scale: int) -> list[Image.Image]:
    """TSM's GroupFullResSample(crop, scale, flip=False): crop-major list of left, right and centre crops."""
    images = group_scale(images, scale)
    width, height = images[0].size
    column_step, row_step = (width - crop) // 4, (height - crop) // 4
    offsets = [(0, 2 * row_step), (4 * column_step, 2 * row_step), (2 * column_step, 2 * row_step)]
    return [image.crop((x, y, x + crop, y + crop)) for x, y in offsets for image in images]


def stack(images: list[Image.Image]) -> np.ndarray:
    """Stack(roll=False): the RGB images concatenated along channels, (H, W, 3 N) uint8."""
    return np.concatenate([np.asarray(image) for image in images], axis=2)


def to_torch_format(array: np.ndarray) -> torch.Tensor:
    """ToTorchFormatTensor(div=True): HWC -> CHW float, divided by 255."""
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div(255)


def group_normalize(tensor: torch.Tensor) -> torch.Tensor:
    """GroupNormalize(ImageNet mean, std): every channel minus its mean, then divided by its std, in place."""
    repeats = tensor.shape[0] // len(IMAGENET_MEAN)
    for channel, mean, std in zip(tensor, list(IMAGENET_MEAN) * repeats, list(IMAGENET_STD) * repeats):
        channel.sub_(mean).div_(std)
    return tensor


def official_views(jpegs: list[bytes], num_segments: int, protocol: Protocol) -> tuple[torch.Tensor, torch.Tensor]:
    """One video through the official chain: (uint8 stack, normalised float), both (V, T, 3, S, S) in our view order.

    The official chain orders views crop-major (crop, then clip); ours is clip-major (view = clip * crops + crop).
    """
    indices = official_indices(len(jpegs), num_segments, protocol)
    images = [Image.open(io.BytesIO(jpegs[index])).convert("RGB") for index in indices]
    if protocol.crops == 1:
        cropped = group_centre_crop(group_scale(images, SCALE_SIZE), protocol.crop_size)
    else:
        cropped = group_full_res_sample(images, protocol.crop_size, SCALE_SIZE)
    stacked = stack(cropped)
    normalised = group_normalize(to_torch_format(stacked))
    side = protocol.crop_size
    pixels = torch.from_numpy(stacked).permute(2, 0, 1)
    shape = (protocol.crops, protocol.clips, num_segments, 3, side, side)
    ours_order = (1, 0, 2, 3, 4, 5)
    views = protocol.crops * protocol.clips
    return (
        pixels.reshape(shape).permute(ours_order).reshape(views, num_segments, 3, side, side),
        normalised.reshape(shape).permute(ours_order).reshape(views, num_segments, 3, side, side),
    )


# ---- fixtures and our side ----


def shard_videos(width: int, height: int, prefix: str) -> list[dict]:
    """The test's videos at one stored size."""
    return make_videos(NUM_VIDEOS, FRAME_COUNTS, width=width, height=height, prefix=prefix)


@pytest.fixture(scope="module")
def shards(tiny_shards: Callable[..., Path]) -> Path:
    """Validation splits of real JPEG frames: native 455x256, and 640x360 / 427x240 stored sizes."""
    sizes = {"native": NATIVE_SIZE, "large": (640, 360), "small": (427, 240)}
    splits = {split: (shard_videos(width, height, split[0]), (2, 1)) for split, (width, height) in sizes.items()}
    return tiny_shards("eval_protocol_shards", **splits)


def stored_jpegs(shards: Path, split: str) -> dict[str, list[bytes]]:
    """Every video's JPEG frames, all of them, read back from the split's shards."""
    videos = {}
    for entry in read_split(shards, split):
        for raw in iterate_tar(entry.path):
            meta = parse_meta(raw, entry.path)
            videos[str(meta["id"])] = slice_frames(raw["frames"], meta, np.arange(int(meta["num_frames"])))
    return videos


def config_for(protocol: Protocol, decode_in_worker: bool) -> PipelineConfig:
    """The loader configuration of a protocol (what evaluate.py builds from its flags)."""
    return PipelineConfig(
        rates=RATES, batch_size=NUM_VIDEOS, train=False, decode_in_worker=decode_in_worker,
        short_video=protocol.short_video, crop_size=protocol.crop_size, test_resize=SCALE_SIZE,
        test_crops=protocol.crops, test_clips=protocol.clips,
    )  # fmt: skip


def selected(shards: Path, split: str, protocol: Protocol, decode_in_worker: bool = True) -> list:
    """Every video of the split, frames and crops selected as a loader worker does."""
    config = config_for(protocol, decode_in_worker)
    return [
        select_sample(raw, entry.path, config, None)
        for entry in read_split(shards, split)
        for raw in iterate_tar(entry.path)
    ]


def loader_batch(shards: Path, split: str, protocol: Protocol) -> dict:
    """The one evaluation batch of the split from build_loader (cpu backend, normalised on the device)."""
    loader = build_loader(
        shards, split, RATES, NUM_VIDEOS, train=False, decode="cpu", device="cpu", num_workers=0,
        short_video=protocol.short_video, crop_size=protocol.crop_size, test_resize=SCALE_SIZE,
        test_crops=protocol.crops, test_clips=protocol.clips,
    )  # fmt: skip
    (batch,) = list(loader)
    return batch


def video_slice(batch: dict, rate: int, position: int) -> torch.Tensor:
    """The views of the video at `position` of a batch, (V, T, 3, S, S)."""
    views = batch["views"]
    return batch["frames"][rate][position * views : (position + 1) * views]


# ---- frames stored at 455x256: exact ----


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=[protocol.name for protocol in PROTOCOLS])
def test_cpu_backend_views_equal_the_official_chain_at_455x256(shards: Path, protocol: Protocol) -> None:
    videos = stored_jpegs(shards, "native")
    pixels, _ = CpuDecoder().decode(selected(shards, "native", protocol))  # uint8: what the workers hand over
    batch = loader_batch(shards, "native", protocol)
    views = protocol.crops * protocol.clips
    assert pixels["id"] == batch["id"] and sorted(batch["id"]) == sorted(videos) and batch["views"] == views
    for position, video_id in enumerate(batch["id"]):
        for rate in RATES:
            official_pixels, official_floats = official_views(videos[video_id], rate, protocol)
            assert torch.equal(video_slice(pixels, rate, position), official_pixels), (video_id, rate)
            ours = video_slice(batch, rate, position)
            assert ours.shape == official_floats.shape == (views, rate, 3, protocol.crop_size, protocol.crop_size)
            torch.testing.assert_close(ours, official_floats, atol=NORMALISE_ATOL, rtol=0)


def test_the_protocols_really_differ(shards: Path) -> None:
    """Crops, clips and short-video rules each move pixels, so the equalities above test each of them."""
    video = stored_jpegs(shards, "native")["n0001"]  # 8 frames: T = 8 is the short-video case
    by_name = {protocol.name: official_views(video, 8, protocol)[0] for protocol in PROTOCOLS}
    centre, left, right, middle = (by_name["tsm_test_crops_1"][0], *by_name["tsm_test_crops_3"])
    assert not torch.equal(centre, middle)  # x = 116 against GroupFullResSample's 114
    assert not torch.equal(left, right)
    assert not torch.equal(by_name["ffn_centre_crop"][0], centre)  # all-zero indices against every frame
    assert torch.equal(by_name["tsm_twice_sample"][0], centre)
    twice = official_views(stored_jpegs(shards, "native")["n0000"], 8, PROTOCOLS[5])[0]  # 20 frames
    assert not torch.equal(twice[0], twice[1])  # segment centres against segment starts


# ---- frames stored at other sizes: measured and bounded ----

SPATIAL_PROTOCOLS = [protocol for protocol in PROTOCOLS if protocol.clips == 1 and protocol.short_video == "segments"]


def mean_abs_gap(shards: Path, split: str, protocol: Protocol) -> tuple[float, float]:
    """Mean and max |ours - official| of every view pixel of the split (largest rate), on the 0-255 scale."""
    videos = stored_jpegs(shards, split)
    pixels, _ = CpuDecoder().decode(selected(shards, split, protocol))
    gaps = []
    for position, video_id in enumerate(pixels["id"]):
        for rate in RATES[-1:]:
            official_pixels, _ = official_views(videos[video_id], rate, protocol)
            gaps.append((video_slice(pixels, rate, position).float() - official_pixels.float()).abs().flatten())
    every = torch.cat(gaps)
    return every.mean().item(), every.max().item()


@pytest.mark.parametrize("split", ["large", "small"])
def test_other_stored_sizes_stay_within_the_measured_gap(shards: Path, split: str) -> None:
    """640x360 and 427x240 frames: crop-then-resize against PIL's resize-then-crop differs, by a bounded amount."""
    for protocol in SPATIAL_PROTOCOLS:
        mean_abs, max_abs = mean_abs_gap(shards, split, protocol)
        print(f"{split} {protocol.name}: mean |diff| {mean_abs:.3f}, max {max_abs:.0f} (0-255)")
        assert 0.0 < mean_abs <= OTHER_SIZE_MEAN_ABS_LIMITS[split], (protocol.name, mean_abs)
    assert mean_abs_gap(shards, "native", SPATIAL_PROTOCOLS[0]) == (0.0, 0.0)


@pytest.fixture(scope="module")
def golden_tsm() -> torch.nn.Module:
    """The official-parity TSM-R50 of tests/golden (weights rebuilt from the spec, calibrated BN statistics)."""
    from test_model_parity import GOLDEN_DIR, NUM_CLASSES, PARITY_FILE, rebuild_state_dict

    from model import build_model, load_official_state_dict

    with open(PARITY_FILE) as handle:
        golden = json.load(handle)
    state_dict = rebuild_state_dict(golden["tsm_state_dict_spec"], golden["seed"], GOLDEN_DIR / "tsm_bn_stats.npz")
    network = build_model("resnet50", NUM_CLASSES)
    load_official_state_dict(network, state_dict)
    return network.eval()


def logits_gap(network: torch.nn.Module, shards: Path, split: str, protocol: Protocol) -> float:
    """Relative L2 of the golden model's logits, our views of the split's longest video against the official ones."""
    video_id = f"{split[0]}0000"
    batch = loader_batch(shards, split, protocol)
    ours = video_slice(batch, GOLDEN_RATE, batch["id"].index(video_id))
    _, official = official_views(stored_jpegs(shards, split)[video_id], GOLDEN_RATE, protocol)
    with torch.no_grad():
        ours_logits, official_logits = network(ours).double(), network(official).double()
    return float(torch.linalg.norm(ours_logits - official_logits) / torch.linalg.norm(official_logits))


@pytest.mark.slow
def test_golden_model_logits_at_other_stored_sizes(shards: Path, golden_tsm: torch.nn.Module) -> None:
    """The pixel gap of other stored sizes, as the golden TSM-R50's logits see it (at 455x256 the pixels are equal)."""
    protocol = SPATIAL_PROTOCOLS[0]  # one centre crop 224
    for split in ("large", "small"):
        gap = logits_gap(golden_tsm, shards, split, protocol)
        print(f"{split} {protocol.name}: golden TSM-R50 logits relative L2 {gap:.4f}")
        assert 0.0 < gap <= OTHER_SIZE_LOGITS_L2_LIMIT, (split, gap)


# ---- the GPU backends take the same views (run here on the CPU) ----

BACKEND_CASES = [("native", protocol) for protocol in PROTOCOLS] + [("large", PROTOCOLS[4]), ("small", PROTOCOLS[1])]
BACKEND_IDS = [f"{split}-{protocol.name}" for split, protocol in BACKEND_CASES]
# DALI (slower in CPU mode): centre and GroupFullResSample crops at 224 and 256, two clips, and both resize paths.
DALI_CASES = [BACKEND_CASES[index] for index in (0, 3, 5, 7, 8)]
DALI_MEAN_ABS_LIMIT = 1.0  # as tests/test_data_dali.py: decoder and resize rounding only
DALI_MAX_ABS_LIMIT = 16.0
DALI_NATIVE_MAX_ABS = 1e-3


def differences_255(first: dict, second: dict) -> tuple[float, float]:
    """Mean and max absolute difference of two normalised batches' frames on the 0-255 pixel scale."""
    scale = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0
    gaps = torch.cat([((first[rate] - second[rate]).abs() * scale).flatten() for rate in RATES])
    return gaps.mean().item(), gaps.max().item()


@pytest.mark.parametrize("split, protocol", BACKEND_CASES, ids=BACKEND_IDS)
def test_torchvision_backend_gives_the_cpu_backend_views(shards: Path, split: str, protocol: Protocol) -> None:
    cpu_batch, _ = CpuDecoder(normalise=True).decode(selected(shards, split, protocol))
    decoder = TorchvisionDecoder(torch.device("cpu"))
    batch, replaced = decoder.decode(selected(shards, split, protocol, decode_in_worker=False))
    assert replaced == 0 and batch["id"] == cpu_batch["id"] and batch["views"] == cpu_batch["views"]
    for rate in RATES:
        assert torch.equal(batch["frames"][rate], cpu_batch["frames"][rate])


@pytest.mark.dali
@pytest.mark.parametrize(
    "split, protocol", DALI_CASES, ids=[f"{split}-{protocol.name}" for split, protocol in DALI_CASES]
)
def test_dali_cpu_mode_gives_the_cpu_backend_views(shards: Path, split: str, protocol: Protocol) -> None:
    pytest.importorskip("nvidia.dali")
    from data_pipeline.decode import DaliDecoder

    cpu_batch, _ = CpuDecoder(normalise=True).decode(selected(shards, split, protocol))
    views = protocol.crops * protocol.clips
    decoder = DaliDecoder(torch.device("cpu"), max_frames=NUM_VIDEOS * views * sum(RATES), num_threads=1)
    batch, replaced = decoder.decode(selected(shards, split, protocol, decode_in_worker=False))
    assert replaced == 0 and batch["id"] == cpu_batch["id"] and batch["views"] == views
    for rate in RATES:
        assert batch["frames"][rate].shape == cpu_batch["frames"][rate].shape
    mean_abs, max_abs = differences_255(cpu_batch["frames"], batch["frames"])
    print(f"DALI (CPU mode) vs cpu backend, {split} {protocol.name}: mean abs {mean_abs:.3g}, max {max_abs:.3g}")
    assert mean_abs <= DALI_MEAN_ABS_LIMIT and max_abs <= DALI_MAX_ABS_LIMIT
    if split == "native":  # no resampling: the same decoded pixels, only DALI's normalisation arithmetic differs
        assert max_abs <= DALI_NATIVE_MAX_ABS


def test_evaluate_flags_select_the_protocols() -> None:
    import evaluate

    assert evaluate.full_res_sizes(224, None) == (256, 256) and evaluate.full_res_sizes(32, 32) == (32, 32)
    args = evaluate.build_parser().parse_args(
        ["--checkpoints", "a.pt", "--shards", "s", "--output", "o", "--test-crops", "3", "--test-clips", "2",
         "--full-res", "--short-video", "segments"]
    )  # fmt: skip
    assert (args.test_crops, args.test_clips, args.full_res, args.short_video) == (3, 2, True, "segments")
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args([*"--checkpoints a.pt --shards s --output o --test-crops 5".split()])
