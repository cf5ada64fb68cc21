"""What the machine and the libraries were when a result was made: enough to tell whether numbers can match.

CPU results are bitwise reproducible only on the same machine type and library versions: torch and oneDNN pick
their CPU kernels per instruction set, and kernels for different instruction sets round differently
(docs/results.md, "Reproducibility").
"""

from __future__ import annotations

import os
import platform
from typing import Any

# Environment variables that change which CPU kernels run (and so the last bits of every result).
KERNEL_ENVIRONMENT = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")
CPUINFO = "/proc/cpuinfo"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere platform.processor()), or "unknown"."""
    try:
        with open(CPUINFO, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_record() -> dict[str, Any]:
    """The machine, the library versions and the instruction-set level the CPU kernels used."""
    import torch

    return {
        "platform": platform.platform(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_environment": {name: os.environ[name] for name in KERNEL_ENVIRONMENT if name in os.environ},
    }
