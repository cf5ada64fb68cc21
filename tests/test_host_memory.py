"""data_pipeline.host_memory: with freed memory kept, later batch-sized blocks reuse warm pages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

KEEP_FREED_PROBE = """
import resource, sys, torch
from data_pipeline.host_memory import keep_freed_memory
def faults_of_later_batches():
    faults = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        batch = torch.ones(48 * 2**20 // 4)  # a 48 MiB float batch, above glibc's largest mmap threshold
        del batch
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sum(faults[4:])  # glibc may place the first two at different addresses; later ones reuse them
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
print(kept, faults_of_later_batches())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc fault counts")
def test_keep_freed_memory_reuses_warm_pages_for_the_next_batch() -> None:
    def run(mode: str) -> tuple[str, int]:
        output = subprocess.run([sys.executable, "-c", KEEP_FREED_PROBE, mode], capture_output=True, text=True,
                                check=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()  # fmt: skip
        return output[0], int(output[1])

    default_flag, default_faults = run("default")
    kept_flag, kept_faults = run("keep")
    assert kept_flag == "True" and default_flag == "None"
    pages = 48 * 2**20 // 4096
    assert default_faults > 4 * pages // 2  # glibc maps fresh pages for every batch
    assert kept_faults < pages // 20  # the freed batches' pages are reused
