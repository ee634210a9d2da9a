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


def native_bf16() -> bool:
    """Whether the processor multiplies bf16 in hardware: AMX tiles (Intel Sapphire Rapids and
    later) or AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake). Elsewhere (AVX2-only CPUs:
    most laptops, AMD Zen 2/3) PyTorch and oneDNN emulate bf16 products in fp32 with conversions,
    many times slower than fp32 itself. ``ONEDNN_MAX_CPU_ISA`` below those ISAs (e.g. ``AVX2``, to
    imitate such a CPU) counts as emulated too."""
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()  # set to imitate an older CPU
    return bool(hardware) and (cap in ("ALL", "DEFAULT") or cap.startswith(ONEDNN_BF16_ISAS))


ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10")
"""Values of ``ONEDNN_MAX_CPU_ISA`` that still let oneDNN multiply bf16 in hardware (its ISA names)."""


def onednn_bf16_weights() -> bool:
    """Whether oneDNN can hold bf16 weights in its blocked layout here: PyTorch refuses to reorder
    them (``mkldnn_reorder_linear_weight: bf16 path needs …``) without AVX512BW/VL/DQ or AVX-NE-CONVERT."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def describe() -> str:
    """One line: processor, flags, cores, torch build and threads, GPU."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{processor()}; flags {' '.join(isa_flags()) or 'n/a'}; "
            f"bf16 {'in hardware' if native_bf16() else 'emulated'}; {os.cpu_count()} logical cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); {device}")
