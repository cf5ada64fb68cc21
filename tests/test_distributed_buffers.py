"""common.distributed.broadcast_buffers under two gloo ranks on the CPU: after a DDP training step the ranks hold
different BatchNorm running statistics; the broadcast gives every rank rank 0's, and training is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from common.distributed import broadcast_buffers

WORLD_SIZE = 2

pytestmark = pytest.mark.slow


def small_network() -> nn.Module:
    """Convolutions with BatchNorm (running mean, variance and a step counter per norm), seeded identically."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.Flatten(),
        nn.LazyLinear(2),
    )


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, rank: int, step: int) -> None:
    """One DDP training step on inputs that differ between ranks."""
    generator = torch.Generator().manual_seed(100 * step + rank)
    videos = torch.randn(4, 3, 8, 8, generator=generator) * (1 + rank)
    optimizer.zero_grad()
    model(videos).square().mean().backward()
    optimizer.step()


def build(rank: int) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """(network, its DDP wrapper, optimiser), the lazy layer materialised before wrapping."""
    network = small_network()
    network(torch.zeros(1, 3, 8, 8))  # the lazy layer draws its initial weights right after the seeding
    return network, nn.parallel.DistributedDataParallel(network), torch.optim.SGD(network.parameters(), lr=0.1)


def buffers_of(network: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every named buffer."""
    return {name: buffer.detach().clone() for name, buffer in network.named_buffers()}


def run_rank(rank: int, out_dir: str) -> None:
    """One rank: a step, the statistics before and after the broadcast, then a second step with and without it."""
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP thread pool (it would hang)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD_SIZE)
    try:
        network, model, optimizer = build(rank)
        train_step(model, optimizer, rank, step=0)
        before = buffers_of(network)
        copied = broadcast_buffers(network)
        after = buffers_of(network)
        parameters = {name: value.detach().clone() for name, value in network.named_parameters()}
        train_step(model, optimizer, rank, step=1)

        plain, plain_model, plain_optimizer = build(rank)
        train_step(plain_model, plain_optimizer, rank, step=0)
        train_step(plain_model, plain_optimizer, rank, step=1)
        no_buffers = broadcast_buffers(nn.Linear(2, 2))
        torch.save({
            "before": before, "after": after, "copied": copied, "parameters": parameters,
            "with_broadcast": network.state_dict(), "without_broadcast": plain.state_dict(),
            "no_buffers": no_buffers,
        }, Path(out_dir, f"rank{rank}.pt"))  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Run the two ranks once and return what each saved."""
    root = tmp_path_factory.mktemp("buffers")
    mp.start_processes(run_rank, args=(str(root),), nprocs=WORLD_SIZE, join=True, start_method="fork")
    return [torch.load(root / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]


def test_ranks_hold_different_running_statistics_after_a_step(ranks: list[dict]) -> None:
    first, second = (record["before"] for record in ranks)
    differing = [name for name in first if not torch.equal(first[name], second[name])]
    assert sorted(differing) == ["1.running_mean", "1.running_var", "4.running_mean", "4.running_var"]


def test_broadcast_gives_every_rank_rank_zeros_buffers_and_leaves_parameters(ranks: list[dict]) -> None:
    assert [record["copied"] for record in ranks] == [6, 6]  # 2 norms x (mean, variance, steps counted)
    for record in ranks:
        assert all(torch.equal(record["after"][name], ranks[0]["before"][name]) for name in record["after"])
    assert all(torch.equal(ranks[0]["parameters"][name], ranks[1]["parameters"][name])
               for name in ranks[0]["parameters"])


def test_training_after_the_broadcast_is_unchanged(ranks: list[dict]) -> None:
    for record in ranks:
        with_broadcast, without = record["with_broadcast"], record["without_broadcast"]
        assert all(torch.equal(with_broadcast[name], without[name]) for name in with_broadcast)


def test_a_module_without_buffers_and_a_single_process_copy_nothing(ranks: list[dict]) -> None:
    assert [record["no_buffers"] for record in ranks] == [0, 0]
    network = small_network()
    assert broadcast_buffers(network) == 0  # no process group here
