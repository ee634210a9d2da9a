"""int8 weights for decoding on a CPU: PyTorch's dynamic quantization.

:func:`quantize_linear_int8` replaces every ``nn.Linear`` of a model by
``torch.ao.nn.quantized.dynamic.Linear`` (``torch.ao.quantization.quantize_dynamic``): weights
stored as int8 with one scale per tensor, activations quantized on the fly per batch, products
in int8 with int32 accumulation (FBGEMM/oneDNN kernels). A quarter of fp32's weight bytes to read
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


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """``model`` (fp32, CPU, eval) with int8 dynamically quantized linear layers, in place."""
    with warnings.catch_warnings():  # torch 2.13 announces the move of this API to torchao (still here)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
