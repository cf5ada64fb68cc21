"""Stop requests: SIGUSR1 / SIGTERM turned into a flag that the training loop reads between steps.

SLURM sends SIGUSR1 before a time limit (``--signal``) and SIGTERM on a preemption or ``scancel``; a user may
``kill`` one training process. The handler only records the signal; the loop asks `StopRequest.agreed` after
each step, which all ranks call at the same point, so every rank stops after the same step even when only one
received the signal.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist

from common.distributed import is_distributed

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def signal_name(number: int) -> str:
    """"SIGUSR1" for 10 and so on ("signal N" for a number the platform does not name)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class StopRequest:
    """Context manager recording STOP_SIGNALS while training runs; restores the previous handlers on exit.

    Outside the main thread (where Python cannot install handlers) it records nothing. Loader worker processes
    forked while it is active inherit the handler, so a signal sent to every process of a job does not end them.

    Attributes
    ----------
    received : int
        The last stop signal this process received (0: none).
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received = 0
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopRequest:
        """Install the handlers (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._record)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        """Put the previous handlers back."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _record(self, number: int, frame: FrameType | None) -> None:
        """The handler: remember the signal, nothing else (the loop acts on it between steps)."""
        self.received = number

    def agreed(self, device: torch.device | str = "cpu") -> int:
        """Return the stop signal of any rank (the highest number when several; 0: none).

        Every rank of a process group must call it at the same point of the loop (one all_reduce of one number,
        on `device`: the CUDA device under NCCL).
        """
        if not is_distributed():
            return self.received
        flag = torch.tensor([float(self.received)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
