"""Timing several candidates fairly: interleaved, after a warm-up, the median of each; and the
memory one call of each needs.
(The machine's description is ``transformerkit.backends.machine.describe``.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import statistics
import time
from collections.abc import Callable


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


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def working_memory(run: Callable[[], object]) -> float | None:
    """Bytes of resident memory one call of ``run`` adds at its peak (activations, gradients,
    caches, workspaces; not what was resident before it, such as the weights). Freed heap memory
    is handed back first (``malloc_trim``) and the peak counter reset (``/proc/self/clear_refs``),
    so candidates measured one after the other do not inherit each other's peaks. None off Linux."""
    try:
        gc.collect()
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current resident size
        before = _status_kib("VmRSS")
        run()
        return (_status_kib("VmHWM") - before) * 1024.0
    except (OSError, AttributeError, StopIteration):
        return None
