"""A one-paragraph description of the machine a benchmark ran on (CPU, flags, cores, torch build)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def describe() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name") and model in ("", "unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{model}; flags {' '.join(shown) or 'n/a'}; {os.cpu_count()} logical cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); {device}")


def interleaved_medians(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, run A B C A B C … after ``warmup`` rounds."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
