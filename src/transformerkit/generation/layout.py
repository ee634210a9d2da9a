"""A weight layout for decoding one token at a time on a CPU.

Decoding a few sequences multiplies a vector by every weight matrix: the step is bound by reading
the weights. ``nn.Linear`` stores W as (out, in) and computes x · Wᵀ; for a single row the BLAS
then reads W across its rows' strides. Stored transposed, (in, out) and contiguous — GPT-2's
``Conv1D`` layout — the same product x · W streams W in order. Measured on a 2-core AMD EPYC
(fp32, GPT-2 124M shapes, weights not in cache): 1.1–1.5× faster GEMVs, and the 50,257 × 768
LM head 9.4 → 5.5 ms per token; batch-1 greedy decoding 1.15–1.30× faster. At 8 rows the two
layouts are within noise, so ``transformerkit generate`` (one prompt) uses this layout and
batched generation does not. The arithmetic is the same up to summation order.

:func:`use_decoding_layout` swaps every ``nn.Linear`` of a model for a :class:`DecodingLinear`
(in place, for inference); ``state_dict()`` still gives the (out, in) weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class DecodingLinear(nn.Module):
    """y = x W + b with W stored (in_features, out_features), contiguous. x: (..., in) → (..., out)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self._register_state_dict_hook(_as_linear_state)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        out = rows @ self.weight_t if self.bias is None else torch.addmm(self.bias, rows, self.weight_t)
        return out.view(*x.shape[:-1], self.out_features)


def _as_linear_state(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Present ``weight_t`` as nn.Linear's (out, in) ``weight`` in state dicts."""
    state[f"{prefix}weight"] = state.pop(f"{prefix}weight_t").t()


def use_decoding_layout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`DecodingLinear`; for inference."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, DecodingLinear(child))
    return model
