"""Overlap GPU decode with training: a background thread decodes the next batches while the caller trains.

`prefetch_outputs(items, produce, device, depth)` yields `produce(item)` for every item, in order, computed up to
`depth` items ahead in one thread. On CUDA the thread works under its own stream and records an event once a
result is ready; the consumer's current stream waits on that event before the result is handed over, and every
CUDA tensor of the result is marked as used by the consumer's stream (`record_stream`) so the caching allocator
does not give its memory to the side stream again while the training step may still read it. On other devices the
same code runs with no streams. An exception in the thread (from the items or from `produce`) is re-raised in the
consumer at the position of the item that failed; closing the generator (a `break`) stops and joins the thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_PREFETCH = 2
THREAD_NAME = "data-pipeline-gpu-decode"
PUT_POLL_S = 0.05  # how often a thread blocked on a full queue looks at the stop flag
GET_POLL_S = 0.5  # how often the consumer checks that the thread is still alive while it waits


@dataclass
class _Failure:
    """An exception raised in the prefetch thread, to be re-raised in the consumer."""

    error: BaseException


_END = object()


def prefetch_outputs(
    items: Iterator[Any], produce: Callable[[Any], Any], device: torch.device, depth: int = DEFAULT_PREFETCH
) -> Iterator[Any]:
    """Yield `produce(item)` for each item of `items`, in order, computed up to `depth` items ahead in a thread.

    Parameters
    ----------
    items : iterator
        The source (consumed only by the thread; closed by it when it stops, if it has a `close` method).
    produce : callable
        Turns one item into a result (e.g. GPU decode of a compressed batch); runs in the thread, under a side
        CUDA stream when `device` is CUDA.
    device : torch.device
        The device `produce` works on.
    depth : int
        Results held ready at most (at least 1).

    Yields
    ------
    Any
        The results; on CUDA, safe to use on the consumer's current stream.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth {depth}; use at least 1 (or no prefetch)")
    device = _indexed(torch.device(device))
    consumer_stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(
        target=_produce_all, args=(items, produce, device, consumer_stream, results, stop), name=THREAD_NAME,
        daemon=True,
    )  # fmt: skip
    thread.start()
    try:
        while True:
            entry = _next_entry(results, thread)
            if entry is _END:
                return
            if isinstance(entry, _Failure):
                raise entry.error
            output, ready = entry
            if ready is not None:
                _hand_over(output, ready, device)
            yield output
    finally:
        stop.set()
        thread.join()


def _indexed(device: torch.device) -> torch.device:
    """A CUDA device with its index fixed from the calling thread (a new thread's current device is 0)."""
    if device.type != "cuda" or device.index is not None:
        return device
    return torch.device("cuda", torch.cuda.current_device())


def _produce_all(
    items: Iterator[Any],
    produce: Callable[[Any], Any],
    device: torch.device,
    consumer_stream: Any,
    results: queue.Queue,
    stop: threading.Event,
) -> None:
    """Thread body: produce every item's result into `results`, then _END; a _Failure on an exception."""
    try:
        with _device_context(device):
            side = _side_stream(device, consumer_stream)
            for item in items:
                if stop.is_set():
                    return
                with _stream_context(side):
                    output = produce(item)
                    ready = _ready_event(side)
                if not _put(results, (output, ready), stop):
                    return
        _put(results, _END, stop)
    except BaseException as error:  # noqa: BLE001 - every failure must reach the consumer
        _put(results, _Failure(error), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _device_context(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` the thread's current CUDA device; nothing elsewhere."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _side_stream(device: torch.device, consumer_stream: Any) -> Any:
    """A new CUDA stream that starts after the work queued so far on the consumer's stream; None off CUDA."""
    if device.type != "cuda":
        return None
    side = torch.cuda.Stream(device=device)
    side.wait_stream(consumer_stream)
    return side


def _stream_context(side: Any) -> contextlib.AbstractContextManager:
    """Run under the side stream on CUDA (torch.cuda.current_stream() is then the side stream)."""
    return torch.cuda.stream(side) if side is not None else contextlib.nullcontext()


def _ready_event(side: Any) -> Any:
    """An event recorded on the side stream after the result's work; None off CUDA."""
    if side is None:
        return None
    event = torch.cuda.Event()
    event.record(side)
    return event


def _put(results: queue.Queue, entry: Any, stop: threading.Event) -> bool:
    """Put `entry`, waiting for room while the consumer has not stopped; False when it stopped."""
    while not stop.is_set():
        try:
            results.put(entry, timeout=PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _next_entry(results: queue.Queue, thread: threading.Thread) -> Any:
    """The next entry of the thread; RuntimeError should the thread end without one (it never should)."""
    while True:
        try:
            return results.get(timeout=GET_POLL_S)
        except queue.Empty:
            if not thread.is_alive() and results.empty():
                raise RuntimeError("the data prefetch thread ended without a result") from None


def _hand_over(output: Any, ready: Any, device: torch.device) -> None:
    """Make the consumer's current stream wait for the result and own its CUDA tensors' memory."""
    stream = torch.cuda.current_stream(device)
    stream.wait_event(ready)
    for tensor in cuda_tensors(output):
        tensor.record_stream(stream)


def cuda_tensors(output: Any) -> Iterator[torch.Tensor]:
    """Every CUDA tensor inside nested dicts, lists and tuples."""
    if isinstance(output, torch.Tensor):
        if output.is_cuda:
            yield output
    elif isinstance(output, dict):
        for value in output.values():
            yield from cuda_tensors(value)
    elif isinstance(output, (list, tuple)):
        for value in output:
            yield from cuda_tensors(value)


__all__ = ["DEFAULT_PREFETCH", "THREAD_NAME", "cuda_tensors", "prefetch_outputs"]
