"""Temporal shift: exact semantics, autograd correctness, channels_last, and per-video isolation in the model."""

from __future__ import annotations

import pytest
import torch

from model import branch_scope, build_model, naive_temporal_shift, temporal_shift
from model.temporal_shift import no_temporal_shift

FFN_FRAMES = (4, 8, 16)
NUM_VIDEOS = 4  # official mode groups 16 frames: 4 videos at 4F, 2 at 8F share one clip
FRAME_SIZE = 32


def shift_by_definition(frames: torch.Tensor, clip_frames: int, fold_div: int) -> torch.Tensor:
    """Element-by-element statement of the shift, written independently of both implementations."""
    total, channels = frames.shape[:2]
    fold = channels // fold_div
    expected = frames.clone()
    for index in range(total):
        position = index % clip_frames
        for channel in range(2 * fold):
            source = position + 1 if channel < fold else position - 1
            inside = 0 <= source < clip_frames
            expected[index, channel] = frames[index - position + source, channel] if inside else 0.0
    return expected


@pytest.mark.parametrize("clip_frames", [1, 2, 3, 5])
def test_shift_matches_definition(clip_frames: int) -> None:
    frames = torch.randn(2 * clip_frames, 16, 3, 2)
    expected = shift_by_definition(frames, clip_frames, fold_div=8)
    assert torch.equal(temporal_shift(frames, clip_frames), expected)
    assert torch.equal(naive_temporal_shift(frames, clip_frames), expected)


def test_shift_direction_channel_zero_reads_next_frame() -> None:
    frames = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 8, 1, 1).contiguous()
    shifted = temporal_shift(frames, clip_frames=4, fold_div=8)
    assert shifted[:, 0].flatten().tolist() == [1.0, 2.0, 3.0, 0.0]
    assert shifted[:, 1].flatten().tolist() == [0.0, 0.0, 1.0, 2.0]
    assert shifted[:, 2].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_gradcheck_in_double(channels_last: bool) -> None:
    frames = torch.randn(6, 16, 2, 3, dtype=torch.float64)
    if channels_last:
        frames = frames.contiguous(memory_format=torch.channels_last)
    frames.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda tensor: temporal_shift(tensor, 3, 8), (frames,))


def test_shift_channels_last_keeps_format_and_values() -> None:
    frames = torch.randn(8, 32, 5, 4)
    frames_cl = frames.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    reference = frames.clone().requires_grad_(True)
    shifted_cl = temporal_shift(frames_cl, 4)
    shifted_ref = naive_temporal_shift(reference, 4)
    assert shifted_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(shifted_cl, shifted_ref)
    upstream = torch.randn_like(shifted_ref)
    shifted_cl.backward(upstream)
    shifted_ref.backward(upstream)
    assert frames_cl.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(frames_cl.grad, reference.grad)


def test_shift_rejects_batch_not_divisible_by_clip() -> None:
    with pytest.raises(ValueError, match="multiple of the clip length"):
        temporal_shift(torch.randn(6, 8, 2, 2), clip_frames=4)


def cross_video_gradients(model: torch.nn.Module, seed: int) -> dict[int, tuple[float, float]]:
    """Per branch: (largest |d logits_i / d input_j| over i != j, smallest own-video gradient norm)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        frames: torch.randn(NUM_VIDEOS, frames, 3, FRAME_SIZE, FRAME_SIZE, generator=generator).requires_grad_(True)
        for frames in FFN_FRAMES
    }
    logits = model.forward_by_frames(inputs)
    results = {}
    for frames in FFN_FRAMES:
        cross, own = 0.0, float("inf")
        for video in range(NUM_VIDEOS):
            (gradient,) = torch.autograd.grad(logits[frames][video].sum(), inputs[frames], retain_graph=True)
            others = torch.cat([gradient[:video], gradient[video + 1:]])
            cross = max(cross, float(others.abs().max()))
            own = min(own, float(gradient[video].norm()))
        results[frames] = (cross, own)
    return results


@pytest.fixture(scope="module")
def isolation_weights() -> dict:
    return build_model("tiny", num_classes=10, trained_frames=FFN_FRAMES).state_dict()


def test_per_video_shift_never_leaks_across_videos(isolation_weights: dict) -> None:
    model = build_model("tiny", num_classes=10, trained_frames=FFN_FRAMES, shift_mode="per-video")
    model.load_state_dict(isolation_weights)
    model.eval()  # frozen BN: batch statistics cannot couple the videos
    for frames, (cross, own) in cross_video_gradients(model, seed=0).items():
        assert cross == 0.0, f"{frames}F branch leaks across videos"
        assert own > 0.0


def test_official_shift_leaks_across_videos_in_lower_branches(isolation_weights: dict) -> None:
    model = build_model("tiny", num_classes=10, trained_frames=FFN_FRAMES, shift_mode="official")
    model.load_state_dict(isolation_weights)
    model.eval()
    gradients = cross_video_gradients(model, seed=0)
    assert gradients[4][0] > 0.0 and gradients[8][0] > 0.0  # the same test fails for the official grouping
    assert gradients[16][0] == 0.0  # clips of 16 frames are whole videos at 16F


def test_naive_and_autograd_models_agree_forward_and_backward() -> None:
    fast = build_model("tiny", num_classes=10, trained_frames=FFN_FRAMES, dropout=0.0)
    naive = build_model("tiny", num_classes=10, trained_frames=FFN_FRAMES, dropout=0.0, shift_impl="naive")
    naive.load_state_dict(fast.state_dict())
    videos = torch.randn(2, 8, 3, FRAME_SIZE, FRAME_SIZE)
    fast(videos).sum().backward()
    naive(videos).sum().backward()
    for (name, p_fast), (_, p_naive) in zip(fast.named_parameters(), naive.named_parameters()):
        if p_fast.grad is None:
            assert p_naive.grad is None, name
        else:
            torch.testing.assert_close(p_fast.grad, p_naive.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_weight_alteration_folded_into_conv1_equals_residual_form() -> None:
    model = build_model("tiny", num_classes=3, trained_frames=FFN_FRAMES, wa_init="as-run").double()
    block = model.layer2[0]
    shifted = torch.randn(8, block.conv1.in_channels, 6, 6, dtype=torch.float64)
    reference = block.conv1(shifted + block.wa.convs["8"](shifted))  # s + wa(s), then conv1, as the paper writes it
    with branch_scope(8):
        torch.testing.assert_close(block._conv1_after_wa(shifted), reference, rtol=1e-12, atol=1e-12)
    with branch_scope(4):
        assert not torch.allclose(block._conv1_after_wa(shifted), reference)



@pytest.mark.parametrize("channels, clip_len", [(8, 1), (8, 3), (4, 2), (4, 1), (2, 2)])
def test_shift_matches_definition_for_one_and_no_channel_per_fold(channels: int, clip_len: int) -> None:
    frames = torch.randn(2 * clip_len, channels, 2, 3, requires_grad=True)
    expected = shift_by_definition(frames.detach(), clip_len, fold_div=8)  # fold 1 for 8 channels, 0 for 4 and 2
    shifted = temporal_shift(frames, clip_len)
    assert torch.equal(shifted, expected)
    upstream = torch.randn_like(expected)
    shifted.backward(upstream)
    reference = frames.detach().clone().requires_grad_(True)
    naive_temporal_shift(reference, clip_len).backward(upstream)
    assert torch.equal(frames.grad, reference.grad)


def test_fold_div_two_shifts_every_channel() -> None:
    frames = torch.randn(6, 4, 2, 2)
    assert torch.equal(temporal_shift(frames, 3, fold_div=2), shift_by_definition(frames, 3, fold_div=2))


@pytest.mark.parametrize("shift", [temporal_shift, naive_temporal_shift, no_temporal_shift])
def test_every_shift_refuses_bad_arguments_with_the_fix(shift) -> None:
    with pytest.raises(ValueError, match=r"^temporal shift expects a 4-D \(N\*T, C, H, W\) tensor, got shape "
                                         r"\(2, 3, 4\)$"):
        shift(torch.randn(2, 3, 4), 2)
    with pytest.raises(ValueError, match=r"^temporal shift: 6 frames cannot be grouped in clips of 4; pass a batch "
                                         r"whose frame count is a multiple of the clip length$"):
        shift(torch.randn(6, 8, 2, 2), clip_frames=4)
    with pytest.raises(ValueError, match=r"^temporal shift: fold_div must be at least 2, got 1$"):
        shift(torch.randn(4, 8, 2, 2), 2, fold_div=1)


def test_no_shift_returns_its_input() -> None:
    frames = torch.randn(4, 8, 2, 2)
    assert no_temporal_shift(frames, 2) is frames
