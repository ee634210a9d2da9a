"""What machine this is, as far as speed choices care: the processor, its vector and matrix
instruction sets, the cores and the PyTorch build."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
"""The CPU flags that decide which kernels oneDNN and MKL can take."""


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def processor() -> str:
    """The processor's model name (what a measured choice holds for)."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    """Which of :data:`SHOWN_FLAGS` the processor has (Linux; empty elsewhere)."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [f for f in SHOWN_FLAGS if f in flags]
    return []


def describe() -> str:
    """One line: processor, flags, cores, torch build and threads, GPU."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{processor()}; flags {' '.join(isa_flags()) or 'n/a'}; {os.cpu_count()} logical cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); {device}")
