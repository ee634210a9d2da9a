"""The paper's formulas written out with plain tensor operations, in float64.

These are the explanation's own arithmetic: every number ``transformerkit explain`` prints comes
from here, and each result is compared with the value the model computed itself (captured by
forward hooks, :mod:`.recording`). Nothing here calls the model's modules or ``torch.nn.functional``;
the weights are read as tensors.

Shapes: x (seq, d_model) — one sequence, no batch —; per head (heads, seq, d_k).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x W + b with ``weight`` stored as PyTorch stores it, (out, in): x (…, in) → (…, out)."""
    y = x @ weight.double().T
    return y if bias is None else y + bias.double()


def layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """LayerNorm(x) = γ ⊙ (x − μ) / √(σ² + ε) + β over the last dimension (σ²: the biased variance)."""
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * gamma.double() + beta.double()


def softmax(scores: Tensor) -> Tensor:
    """softmax(s)_j = exp(s_j − max s) / Σ_k exp(s_k − max s) over the last dimension; a row whose
    entries are all −∞ (every key hidden) gives zeros."""
    top = scores.max(dim=-1, keepdim=True).values
    exp = torch.exp(scores - torch.where(torch.isinf(top), torch.zeros_like(top), top))
    total = exp.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, exp / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(exp))


def sinusoids(positions: Tensor, d_model: int, base: float = 10000.0) -> Tensor:
    """PE(pos, 2i) = sin(pos / base^(2i/d_model)), PE(pos, 2i+1) = cos(pos / base^(2i/d_model)):
    positions (seq,) → (seq, d_model)."""
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = positions.double()[:, None] / base ** (two_i / d_model)
    table = torch.empty(len(positions), d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return table


def rotary_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> Tensor:
    """pos · θ_j with θ_j = base^(−2j/d_k): positions (seq,) → (seq, d_k/2)."""
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return positions.double()[:, None] * theta


def rotate(x: Tensor, angles: Tensor) -> Tensor:
    """Rotary embedding: each feature pair (j, j + d/2) turned by its angle,
    [x₁, x₂] → [x₁ cos − x₂ sin, x₂ cos + x₁ sin]. x (heads, seq, d), angles (seq, d/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def relu(u: Tensor) -> Tensor:
    """max(0, u)."""
    return torch.where(u > 0, u, torch.zeros_like(u))


def gelu(u: Tensor) -> Tensor:
    """GELU(u) = u · Φ(u) = ½ u (1 + erf(u / √2))."""
    return 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))


def gelu_tanh(u: Tensor) -> Tensor:
    """GPT-2's approximation ½ u (1 + tanh(√(2/π) (u + 0.044715 u³)))."""
    return 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))


ACTIVATIONS = {"relu": relu, "gelu": gelu, "gelu_tanh": gelu_tanh}


def entropy_bits(weights: Tensor) -> Tensor:
    """H = −Σ_j a_j log₂ a_j of each attention row (0 · log 0 = 0): (…, keys) → (…)."""
    logs = torch.where(weights > 0, torch.log2(torch.where(weights > 0, weights, torch.ones_like(weights))),
                       torch.zeros_like(weights))
    return -(weights * logs).sum(dim=-1)
