"""Dropout (§5.4) with cheaper random numbers on a CPU.

Inverted dropout keeps each element with probability 1 − p and scales it by 1 / (1 − p):

    y = x · m / (1 − p),   m_i ~ Bernoulli(1 − p)

On a CPU, PyTorch draws one random number per element, and drawing is most of dropout's cost
(measured in BENCHMARKS.md). Here one 64-bit draw gives four 16-bit uniforms u ∈ [−2¹⁵, 2¹⁵),
and an element is kept when u ≥ −2¹⁵ + round(p · 2¹⁶): the same distribution with p rounded to
a multiple of 2⁻¹⁶, from a quarter of the draws. Other devices use ``F.dropout`` (one fused kernel).
The random numbers come from PyTorch's default generator, so ``torch.manual_seed`` and the
trainer's saved RNG state make runs reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> Tensor:
    """(shape) tensor of ``dtype``: 1 / (1 − p) where an element is kept, 0 where it is dropped."""
    count = shape.numel()
    bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((count + 3) // 4,))  # all 64 bits random
    uniforms = bits.view(torch.int16)[:count].view(shape)
    threshold = -2 ** 15 + round(p * 2 ** 16)
    return (uniforms >= threshold).to(dtype) * (1.0 / (1.0 - p))


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout of ``x`` (any shape); the identity when not ``training`` or p = 0."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p, x.dtype)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s cheaper CPU random numbers (same interface and ``p``)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def use_packed_dropout(model: nn.Module, packed: bool = True) -> int:
    """Make every dropout module of ``model`` :class:`Dropout` (``packed``) or PyTorch's
    ``nn.Dropout`` (in place: the class alone changes, ``p`` and mode stay); how many there are.
    Whether the packed draws are faster is measured per machine
    (:func:`transformerkit.backends.calibration.choose_by_step`)."""
    modules = [m for m in model.modules() if type(m) in (Dropout, nn.Dropout)]
    for module in modules:
        module.__class__ = Dropout if packed else nn.Dropout
    return len(modules)
