"""Keeping freed memory inside the process, so that a training step's large tensors are not
faulted in afresh by the next step.

glibc's ``malloc`` hands freed blocks above a threshold back to the operating system (``munmap``,
or trimming the top of the heap). The next step asks for tensors of the same sizes, and the
kernel must map and zero new pages for them: on this project's 2-core machine a softmax over
64 MB took 19 ms into a fresh buffer and 3.5 ms into a reused one, and a base-shape bf16
training step ran 1.5–3× faster with the thresholds raised (BENCHMARKS.md). The threshold is the
largest ``mallopt`` takes: a GPT step over a 50,257-token vocabulary frees more than 1 GiB at once
(logits, their log-softmax and gradients, 206 MB each), and with a 1 GiB threshold glibc trimmed
it and re-faulted it every step (fp32 decoder-only row: 891 → 1,086 tok/s at 2 GiB).
:func:`retain_freed_memory` raises them with ``mallopt``. The cost: the process keeps its peak
memory instead of returning it between steps. Whether it pays depends on the machine and the
model, so ``transformerkit train`` measures it on the model's own steps
(:func:`transformerkit.training.speed_measures.choose_memory_retention`) and
:func:`set_freed_memory_retained` applies the choice; decoding was measured no faster with it
(BENCHMARKS.md) and leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


MAX_THRESHOLD = 2 ** 31 - 1
"""The largest value ``mallopt`` takes (a C int): keep up to 2 GiB of freed memory."""
GLIBC_DEFAULT = 128 * 1024
"""glibc's default mmap and trim thresholds and top pad (``man mallopt``)."""


def retain_freed_memory(threshold: int = MAX_THRESHOLD, top_pad: int = 256 << 20) -> bool:
    """Let glibc keep freed blocks up to ``threshold`` bytes (no ``munmap``, no trimming below it)
    and grow the heap ``top_pad`` bytes at a time. Returns False (and changes nothing) where the C
    library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(option, value) == 1 for option, value in ((_M_MMAP_THRESHOLD, threshold),
                                                                  (_M_TRIM_THRESHOLD, threshold),
                                                                  (_M_TOP_PAD, top_pad)))


def set_freed_memory_retained(retained: bool) -> bool:
    """:func:`retain_freed_memory`, or glibc's default thresholds again (set explicitly, which
    keeps them fixed: glibc's own adjustment of the mmap threshold stays off). False where the C
    library is not glibc."""
    return retain_freed_memory() if retained else retain_freed_memory(GLIBC_DEFAULT, GLIBC_DEFAULT)
