"""int8 weights for decoding on a CPU: PyTorch's dynamic quantization.

:func:`quantize_linear_int8` replaces every ``nn.Linear`` of a model by
``torch.ao.nn.quantized.dynamic.Linear`` (``torch.ao.quantization.quantize_dynamic``): weights
stored as int8 with one scale per tensor, activations quantized on the fly per batch, products
in int8 with int32 accumulation, on FBGEMM's or oneDNN's kernels (oneDNN's reach AMX-INT8 on an
Intel Xeon with AMX: faster from a few rows on, slower for one; the engine is chosen by
measurement, :func:`transformerkit.backends.calibration.quantize_int8_where_fastest`). A quarter of fp32's weight bytes to read
per step — decoding a few rows at a time is bound by reading them — for an approximation whose
effect is measured (BENCHMARKS.md: BLEU and speed on the en→de test split). In place, for
inference only; a tied output projection becomes its own quantized copy.

``torch.ao.quantization`` announces its move to the ``torchao`` package; it is still in the
torch this project pins, and :func:`quantize_linear_int8` is the one place to change then.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_linear_int8(model: nn.Module, engine: str | None = None) -> nn.Module:
    """``model`` (fp32, CPU, eval) with int8 dynamically quantized linear layers, in place.
    ``engine``: the quantized engine whose kernels the weights are packed for — ``x86`` (PyTorch's
    default on x86: FBGEMM), ``onednn`` (oneDNN: AMX-INT8 or VNNI kernels where the CPU has them);
    None: the current one. The packed weights keep their engine; the process's setting is put back."""
    previous = torch.backends.quantized.engine
    if engine is not None:
        torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings():  # torch 2.13 announces the move of this API to torchao (still here)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated",
                                    category=DeprecationWarning)
            return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
    finally:
        torch.backends.quantized.engine = previous
