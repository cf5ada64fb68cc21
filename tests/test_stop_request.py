"""engine.stop_request: real signals sent to this process (and, under gloo, to one rank of two) become a stop flag
that every rank agrees on; the previous handlers come back afterwards."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine.stop_request import STOP_SIGNALS, StopRequest, signal_name

WORLD_SIZE = 2


def test_no_signal_means_no_stop():
    with StopRequest() as stop:
        assert stop.agreed() == 0


@pytest.mark.parametrize("number", STOP_SIGNALS)
def test_a_signal_is_recorded_and_the_previous_handler_restored(number):
    before = signal.getsignal(number)
    with StopRequest() as stop:
        os.kill(os.getpid(), number)
        assert stop.received == number and stop.agreed() == number
    assert signal.getsignal(number) is before


def test_several_signals_keep_the_last():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.agreed() == signal.SIGUSR1


def test_outside_the_main_thread_it_installs_nothing():
    before = signal.getsignal(signal.SIGUSR1)
    seen = []

    def enter() -> None:
        with StopRequest():
            seen.append(signal.getsignal(signal.SIGUSR1))

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [before]


def test_signal_names():
    assert signal_name(signal.SIGUSR1) == "SIGUSR1" and signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(999) == "signal 999"


def run_rank(rank: int, out_dir: str) -> None:
    """Rank 1 alone gets SIGUSR1 between the first and the second agreement; both ranks record what they agree."""
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP thread pool (it would hang)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD_SIZE)
    try:
        with StopRequest() as stop:
            first = stop.agreed()
            if rank == 1:
                os.kill(os.getpid(), signal.SIGUSR1)
            second = stop.agreed()
        torch.save({"first": first, "second": second, "received": stop.received}, Path(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_signal_on_one_rank_stops_every_rank(tmp_path):
    mp.start_processes(run_rank, args=(str(tmp_path),), nprocs=WORLD_SIZE, join=True, start_method="fork")
    records = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    assert [record["first"] for record in records] == [0, 0]
    assert [record["second"] for record in records] == [signal.SIGUSR1, signal.SIGUSR1]
    assert [record["received"] for record in records] == [0, signal.SIGUSR1]
