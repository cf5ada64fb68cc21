"""The training step with soft targets and accumulated micro-batches (engine.training), and the soft-target loss
(model.losses)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from engine.training import accumulated_step, clip_labels, grouped, make_criterion, train_one_epoch, train_step
from model import build_model, cross_entropy, distillation_loss

NUM_CLASSES = 6


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """Float one-hot rows of class indices."""
    return functional.one_hot(labels, NUM_CLASSES).float()


def test_soft_target_cross_entropy_equals_cross_entropy_for_one_hot_targets() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, NUM_CLASSES, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (8,), generator=generator)
    assert torch.equal(cross_entropy(logits, labels), functional.cross_entropy(logits, labels))
    assert torch.allclose(cross_entropy(logits, one_hot(labels)), functional.cross_entropy(logits, labels), atol=1e-6)
    soft = torch.softmax(torch.randn(8, NUM_CLASSES, generator=generator), dim=1)
    manual = -(soft * torch.log_softmax(logits, dim=1)).sum(1).mean()
    assert torch.allclose(cross_entropy(logits, soft), manual, atol=1e-6)
    with pytest.raises(ValueError, match="soft targets"):
        cross_entropy(logits, soft[:, :3])


def test_ffn_and_vanilla_losses_take_soft_targets_the_same_way() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = {frames: torch.randn(4, NUM_CLASSES, generator=generator) for frames in (4, 8, 16)}
    labels = torch.tensor([0, 5, 2, 2])
    hard, hard_parts = distillation_loss(logits, labels)
    soft, soft_parts = distillation_loss(logits, one_hot(labels))
    assert torch.allclose(hard, soft, atol=1e-6) and torch.equal(hard_parts["kl_4"], soft_parts["kl_4"])
    for mode, by_frames in (("ffn", logits), ("vanilla", {8: logits[8]})):
        criterion = make_criterion(mode)
        assert torch.allclose(criterion(by_frames, labels)[0], criterion(by_frames, one_hot(labels))[0], atol=1e-6)


class PooledLinear(nn.Module):
    """A model without batch statistics: the mean pixel of each frame count's clip through a shared linear layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, NUM_CLASSES)

    def forward(self, videos_by_frames: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {frames: self.fc(videos.mean(dim=(1, 3, 4))) for frames, videos in videos_by_frames.items()}


def sgd_setup(model: nn.Module) -> tuple:
    """SGD with momentum, a constant schedule and a disabled scaler."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False)


def batch(count: int, seed: int) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """A random {T: videos} batch and its labels."""
    generator = torch.Generator().manual_seed(seed)
    videos = {frames: torch.randn(count, frames, 3, 4, 4, generator=generator) for frames in (4, 8)}
    return videos, torch.randint(0, NUM_CLASSES, (count,), generator=generator)


def test_two_accumulated_micro_batches_make_the_update_of_one_batch() -> None:
    """Without batch statistics the mean of two half-batch losses is the loss of the whole batch, so the
    gradients, and the SGD steps, agree to float rounding (compared over two steps, momentum included)."""
    criterion = make_criterion("ffn")
    whole, split = PooledLinear(), PooledLinear()
    whole_setup, split_setup = sgd_setup(whole), sgd_setup(split)
    for step in range(2):
        videos, labels = batch(8, seed=step)
        one = train_step(whole, criterion, *whole_setup, videos, labels, torch.device("cpu"), "fp32")
        halves = [({frames: tensor[:4] for frames, tensor in videos.items()}, labels[:4]),
                  ({frames: tensor[4:] for frames, tensor in videos.items()}, labels[4:])]
        two = accumulated_step(split, criterion, *split_setup, halves, torch.device("cpu"), "fp32")
        assert torch.allclose(one.loss, two.loss, atol=1e-6)
        assert torch.allclose(one.logits_by_frames[8], two.logits_by_frames[8], atol=1e-6)
    for left, right in zip(whole.parameters(), split.parameters()):
        assert torch.allclose(left, right, atol=1e-6)
    assert not torch.allclose(whole.fc.weight, PooledLinear().fc.weight)  # the steps did move the weights


def test_one_micro_batch_is_the_plain_step_to_the_bit() -> None:
    criterion = make_criterion("ffn")
    first, second = PooledLinear(), PooledLinear()
    videos, labels = batch(6, seed=3)
    plain = train_step(first, criterion, *sgd_setup(first), videos, labels, torch.device("cpu"), "fp32")
    single = accumulated_step(second, criterion, *sgd_setup(second), [(videos, labels)], torch.device("cpu"), "fp32")
    assert torch.equal(plain.loss, single.loss)
    assert all(torch.equal(left, right) for left, right in zip(first.parameters(), second.parameters()))
    with pytest.raises(ValueError, match="at least one micro-batch"):
        accumulated_step(first, criterion, *sgd_setup(first), [], torch.device("cpu"), "fp32")


class ListLoader(list):
    """A loader of prepared batches (set_epoch records the epoch)."""

    epochs: list[int]

    def set_epoch(self, epoch: int) -> None:
        self.epochs = [*getattr(self, "epochs", []), epoch]


def test_an_epoch_takes_accumulation_batches_per_step_and_transforms_each_micro_batch() -> None:
    model = PooledLinear()
    optimizer, scheduler, scaler = sgd_setup(model)
    loader = ListLoader()
    for seed in range(5):
        videos, labels = batch(2, seed)
        loader.append({"videos": videos, "label": labels, "views": 1})
    keys = []

    def transform(videos_by_frames, labels, key):
        keys.append(key)
        return videos_by_frames, one_hot(labels)

    result = train_one_epoch(model, make_criterion("ffn"), optimizer, scheduler, scaler, loader,
                             torch.device("cpu"), epoch=3, steps=2, precision="fp32", top_frames=8,
                             accumulation=2, batch_transform=transform)
    figures, global_step = result.figures, result.global_step
    assert global_step == 2 and scheduler.last_epoch == 2 and loader.epochs == [3]
    assert keys == [(3, 0, 0), (3, 0, 1), (3, 1, 0), (3, 1, 1)]  # the fifth batch is not a whole step
    assert 0.0 <= figures["train_top1"] <= 100.0 and figures["train_loss"] > 0


def test_views_repeat_each_label_and_grouping_drops_a_partial_group() -> None:
    labels = torch.tensor([3, 1])
    assert torch.equal(clip_labels({"label": labels, "views": 2}), torch.tensor([3, 3, 1, 1]))
    assert clip_labels({"label": labels}) is labels
    assert list(grouped(range(7), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(grouped([], 2)) == []


def test_a_real_ffn_trains_on_mixed_soft_targets() -> None:
    """The tiny TSM-FFN takes a step on soft targets (mixup-style rows), all branches through the same loss."""
    network = build_model("tiny", num_classes=NUM_CLASSES, trained_frames=(4, 8), dropout=0.0)
    optimizer, scheduler, scaler = sgd_setup(network)
    generator = torch.Generator().manual_seed(2)
    videos = {frames: torch.randn(4, frames, 3, 32, 32, generator=generator) for frames in (4, 8)}
    targets = 0.7 * one_hot(torch.tensor([0, 1, 2, 3])) + 0.3 * one_hot(torch.tensor([3, 2, 1, 0]))
    before = [parameter.detach().clone() for parameter in network.parameters()]
    result = train_step(network, make_criterion("ffn"), optimizer, scheduler, scaler, videos, targets,
                        torch.device("cpu"), "fp32")
    assert torch.isfinite(result.loss).all() and set(result.parts) == {"ce_8", "kl_4"}
    assert any(not torch.equal(old, new) for old, new in zip(before, network.parameters()))
