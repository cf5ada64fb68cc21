"""Host allocator setting for processes that build large batches: keep freed memory for reuse.

A float FFN batch of 8 videos at 224 px is 129 MiB in three blocks of 19-77 MiB. glibc's malloc serves blocks
above its mmap threshold (at most 32 MiB by default) with fresh mmap'd pages and unmaps them on free, so every
batch first-touches about 100 MiB of new pages, whose page faults and zeroing cost several times what converting
the batch to float costs once the pages are warm (figures in the data pipeline documentation). Raising the mmap
and trim thresholds keeps those blocks in the heap, so the next batch of the same size reuses warm pages. This is
the effect PyTorch's CPU performance guide gets by preloading jemalloc or tcmalloc, without a preload.

The setting is per process and lasts for its life: a process keeps its peak heap instead of returning it to the
system. It is a no-op where the C library has no mallopt (macOS, Windows) or refuses the values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

LOGGER = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
KEEP_THRESHOLD_BYTES = 2**31 - 1


@functools.lru_cache(maxsize=1)
def _mallopt():
    """glibc's mallopt, or None where the C library lacks it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        function = libc.mallopt
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


def keep_freed_memory() -> bool:
    """Ask malloc to keep freed large blocks in the heap (mmap and trim thresholds at 2 GiB).

    Returns
    -------
    bool
        True when the C library accepted both settings (glibc). False where it has no mallopt, or refused the
        mmap threshold (then nothing changed), or refused the trim threshold (then only the mmap one changed).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    accepted = bool(mallopt(M_MMAP_THRESHOLD, KEEP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_THRESHOLD_BYTES)
    )
    if not accepted:
        LOGGER.debug("mallopt refused the keep-freed-memory thresholds; the allocator keeps its defaults")
    return accepted
