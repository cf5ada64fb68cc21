"""engine.evaluation on hand-made batches: top-k counts, several networks and frame counts, multi-view averaging.

Loader batches hold the views of each video one after another (video-major: row ``video * views + view``, what
data_pipeline's evaluation loader writes). The expected accuracies are recomputed here one video at a time.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.evaluation import count_correct, evaluate_networks, topk_correct

NUM_CLASSES = 10
SIDE = 4
FRAME_COUNTS = (2, 4)
CPU = torch.device("cpu")


class FrameSum(nn.Module):
    """A fixed linear read-out of the frames (logits depend on every view, frame and pixel)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(NUM_CLASSES, 3 * SIDE * SIDE, generator=generator))

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return videos.mean(dim=1).flatten(1) @ self.weight.t()


def make_batches(videos_per_batch: list[int], views: int, seed: int, labels_from: nn.Module) -> list[dict]:
    """Batches of random views; each video's label sits at rank ``video % 7`` of its view-averaged logits.

    The ranks are those of `labels_from` at the first frame count, so top-1 and top-5 counts are neither 0 nor all.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for videos in videos_per_batch:
        frames = {
            count: torch.randn(videos * views, count, 3, SIDE, SIDE, generator=generator) for count in FRAME_COUNTS
        }
        with torch.no_grad():
            averaged = labels_from(frames[FRAME_COUNTS[0]]).view(videos, views, NUM_CLASSES).mean(dim=1)
        ranked = averaged.argsort(dim=1, descending=True)
        labels = torch.stack([ranked[video, video % 7] for video in range(videos)])
        batch = {"videos": frames, "label": labels}
        if views != 1:
            batch["views"] = views
        batches.append(batch)
    return batches


def recount(network: nn.Module, batches: list[dict], count: int, video_major: bool = True) -> dict[str, float]:
    """Top-1 / top-5 in percent, averaging each video's views one video at a time (or view-major when asked)."""
    hits1 = hits5 = total = 0
    for batch in batches:
        labels = batch["label"]
        videos, views = labels.shape[0], batch.get("views", 1)
        with torch.no_grad():
            logits = network(batch["videos"][count])
        for video in range(videos):
            rows = range(video * views, (video + 1) * views) if video_major else range(video, videos * views, videos)
            mean = torch.stack([logits[row] for row in rows]).mean(dim=0)
            rank = int((mean > mean[labels[video]]).sum())
            hits1 += rank == 0
            hits5 += rank < 5
            total += 1
    return {"top1": 100.0 * hits1 / total, "top5": 100.0 * hits5 / total, "n": total}


@pytest.mark.parametrize("views", [1, 3, 6])
def test_multi_view_logits_are_averaged_per_video(views: int) -> None:
    networks = {"a": FrameSum(1), "b": FrameSum(2)}
    batches = make_batches([7, 5], views, seed=views, labels_from=networks["a"])
    results = evaluate_networks(networks, batches, FRAME_COUNTS, CPU, "fp32")
    assert set(results) == {"a", "b"} and all(set(by_count) == set(FRAME_COUNTS) for by_count in results.values())
    for name, network in networks.items():
        for count in FRAME_COUNTS:
            expected = recount(network, batches, count)
            assert results[name][count] == pytest.approx(expected, rel=1e-12), (name, count)
    # label ranks video % 7: 2 of 12 videos right at top-1, 10 of 12 in the top 5 (network "a", first count)
    assert results["a"][FRAME_COUNTS[0]] == pytest.approx({"top1": 100 * 2 / 12, "top5": 100 * 10 / 12, "n": 12})
    if views > 1:  # the data tell the layouts apart, so a view-major average could not pass
        assert recount(networks["a"], batches, FRAME_COUNTS[0], video_major=False) != results["a"][FRAME_COUNTS[0]]


def test_one_video_many_views_and_an_empty_loader() -> None:
    network = FrameSum(3)
    one = make_batches([1], 4, seed=5, labels_from=network)
    results = evaluate_networks({"only": network}, one, (2,), CPU, "fp32")
    assert results == {"only": {2: {"top1": 100.0, "top5": 100.0, "n": 1}}}
    empty = evaluate_networks({"only": network}, [], (2, 4), CPU, "fp32")
    assert empty == {"only": {2: {"top1": 0.0, "top5": 0.0, "n": 0}, 4: {"top1": 0.0, "top5": 0.0, "n": 0}}}


def test_networks_are_left_in_eval_mode_and_frame_counts_are_kept_apart() -> None:
    network = FrameSum(4)
    network.train()
    batches = make_batches([6], 2, seed=9, labels_from=network)
    results = evaluate_networks({"net": network}, batches, (4,), CPU, "fp32")
    assert not network.training
    assert results["net"][4] == pytest.approx(recount(network, batches, 4), rel=1e-12)


def test_topk_correct_counts_hits_and_caps_k_at_the_classes() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.3, 0.2, 0.5, 0.4],    # order: 1, 5, 6, 3, 4, 0, 2
                           [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])   # order: 0, 6, 5, 4, 3, 2, 1
    assert topk_correct(logits, torch.tensor([1, 0])).tolist() == [2, 2]
    assert topk_correct(logits, torch.tensor([4, 3])).tolist() == [0, 2]   # rank 4 (5th) and rank 4 (5th)
    assert topk_correct(logits, torch.tensor([0, 1])).tolist() == [0, 0]   # rank 5 (6th) and rank 6 (7th)
    assert topk_correct(logits, torch.tensor([6, 2]), top_k=2).tolist() == [0, 0]   # rank 2 and rank 5
    assert topk_correct(logits, torch.tensor([5, 6]), top_k=2).tolist() == [0, 2]   # rank 1 and rank 1
    three = torch.tensor([[0.0, 1.0, 2.0]])
    assert topk_correct(three, torch.tensor([0])).tolist() == [0, 1]  # k capped at 3 classes: every class counts
    assert topk_correct(three, torch.tensor([2])).tolist() == [1, 1]
    assert topk_correct(logits[:0], torch.tensor([], dtype=torch.int64)).tolist() == [0, 0]


class NearTie(nn.Module):
    """Two classes 0.001 apart in fp32 whose order bf16 rounding reverses (1.002 rounds to 1 in bf16)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.002], [0.0]]))
            self.linear.bias.copy_(torch.tensor([-1.0, 0.001]))

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.linear(videos.mean(dim=(1, 2, 3, 4)).unsqueeze(1))


def test_precision_is_the_one_asked_for() -> None:
    batches = [{"videos": {2: torch.ones(3, 2, 3, SIDE, SIDE)}, "label": torch.zeros(3, dtype=torch.int64)}]
    fp32 = evaluate_networks({"net": NearTie()}, batches, (2,), CPU, "fp32")["net"][2]
    bf16 = evaluate_networks({"net": NearTie()}, batches, (2,), CPU, "bf16")["net"][2]
    assert fp32 == {"top1": 100.0, "top5": 100.0, "n": 3}  # 0.002 > 0.001
    assert bf16 == {"top1": 0.0, "top5": 100.0, "n": 3}  # bf16 autocast: 0 < 0.001


def test_counts_are_int64_so_they_stay_exact_past_two_to_the_24() -> None:
    network = FrameSum(5)
    batches = make_batches([3, 2], 2, seed=11, labels_from=network)
    correct, videos = count_correct({"a": network, "b": network}, batches, FRAME_COUNTS, CPU, "fp32")
    assert correct.dtype == torch.int64 and correct.shape == (2, len(FRAME_COUNTS), 2) and videos == 5
    expected = recount(network, batches, FRAME_COUNTS[1])
    assert correct[1, 1].tolist() == [round(expected["top1"] * 5 / 100), round(expected["top5"] * 5 / 100)]
