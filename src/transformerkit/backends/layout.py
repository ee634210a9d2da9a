"""A weight layout for decoding a few rows at a time on a CPU.

Decoding multiplies a handful of rows (one per sequence or beam) by every weight matrix: the step
is bound by reading the weights, and how fast they are read depends on how they are laid out.
oneDNN can reorder a weight once into its own blocked layout for a given number of rows; on some
machines (BENCHMARKS.md) that reads faster at 1–32 rows than ``nn.Linear``'s plain (out, in)
matrix, on others not. The arithmetic is the same up to summation order.

:func:`use_decoding_layout` swaps every ``nn.Linear`` of an fp32 or bf16 CPU model for a
:class:`DecodingLinear` (in place, for inference: the blocked weight serves this one product and
nothing else, so the model can no longer be trained, moved or cast); ``state_dict()`` still gives
the (out, in) weights. The loaders of generating tasks
(:func:`~transformerkit.inference.translation.load_translator`,
:func:`~transformerkit.inference.language_modeling.load_generator`, …) apply it where
:func:`~transformerkit.backends.calibration.choose_decoding_layout` measures it faster.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from transformerkit.backends import machine
from transformerkit.backends.onednn import ONEDNN_AVAILABLE

PACKED_FOR_ROWS = 32
"""The row count oneDNN chooses the blocked layout for (measured best for 1–32 rows)."""


class DecodingLinear(nn.Module):
    """y = x Wᵀ + b with W in oneDNN's blocked layout. x: (..., in) → (..., out) in the weight's
    dtype (an input of another dtype, such as bf16 under ``torch.autocast``, is cast to it)."""

    def __init__(self, module: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = module.in_features, module.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), PACKED_FOR_ROWS)
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach(), requires_grad=False)
        self._register_state_dict_hook(_as_linear_state)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != self.packed_weight.dtype:  # e.g. bf16 from an autocast region: oneDNN's op takes one dtype
            x = x.to(self.packed_weight.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def _as_linear_state(module: DecodingLinear, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Give ``nn.Linear``'s (out, in) ``weight`` in state dicts."""
    state[f"{prefix}weight"] = module.packed_weight.to_dense()


def use_decoding_layout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of an fp32 or bf16 CPU ``model`` (in place) by a
    :class:`DecodingLinear`; for inference. Other models (CUDA, no oneDNN, bf16 on a CPU where
    oneDNN cannot hold bf16 weights) are returned unchanged."""
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16) or not ONEDNN_AVAILABLE:
        return model
    if weight.dtype == torch.bfloat16 and not machine.onednn_bf16_weights():
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, DecodingLinear(child))
    return model
