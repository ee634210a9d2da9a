"""A weight layout for decoding a few rows at a time on a CPU.

Decoding multiplies a handful of rows (one per sequence or beam) by every weight matrix: the step
is bound by reading the weights. ``nn.Linear`` stores W as (out, in); oneDNN's fp32 product
(:mod:`transformerkit.nn.linear`) reads W faster stored (in, out) — GPT-2's ``Conv1D`` layout —
and passed as a transposed view. Measured on a 2-core AMD EPYC, GPT-2 124M shapes, fp32, weights
not in cache (ms per product, (out, in) → (in, out)):

=================  ===============  ===============  ===============
rows               768 → 2,304      3,072 → 768      768 → 50,257
=================  ===============  ===============  ===============
1                  0.13 → 0.11      0.21 → 0.16      2.48 → 2.04
8                  0.29 → 0.15      0.31 → 0.23      6.4 → 4.2
32                 0.50 → 0.41      0.69 → 0.61      10.8 → 10.0
=================  ===============  ===============  ===============

(768 → 3,072 at one row is the exception, 0.16 → 0.23; over a GPT-2 step the layout still saves
6 % at one row and 28 % at eight.) In bf16, ``F.linear`` reads the (out, in) layout faster, so
only fp32 CPU models are laid out. The arithmetic is the same up to summation order.

:func:`use_decoding_layout` swaps every ``nn.Linear`` of a model for a :class:`DecodingLinear`
(in place, for inference); ``state_dict()`` still gives the (out, in) weights. The loaders of
generating tasks (:func:`~transformerkit.tasks.translation.load_translator`,
:func:`~transformerkit.tasks.language_modeling.load_generator`, …) apply it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from transformerkit.nn.linear import linear


class DecodingLinear(nn.Module):
    """y = x W + b with W stored (in_features, out_features), contiguous. x: (..., in) → (..., out)."""

    def __init__(self, module: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = module.in_features, module.out_features
        self.weight_t = nn.Parameter(module.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach(), requires_grad=False)
        self._register_state_dict_hook(_as_linear_state)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_t.t(), self.bias)


def _as_linear_state(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Present ``weight_t`` as nn.Linear's (out, in) ``weight`` in state dicts."""
    state[f"{prefix}weight"] = state.pop(f"{prefix}weight_t").t()


def use_decoding_layout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of an fp32 CPU ``model`` (in place) by a :class:`DecodingLinear`;
    for inference. Other models are returned unchanged."""
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, DecodingLinear(child))
    return model
