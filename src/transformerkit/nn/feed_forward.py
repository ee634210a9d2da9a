"""Position-wise feed-forward network (§3.3).

    FFN(x) = max(0, x W_1 + b_1) W_2 + b_2,   W_1 ∈ R^{d_model×d_ff}, W_2 ∈ R^{d_ff×d_model}

applied to each position separately and identically. ReLU is the paper's activation; GELU
(BERT, exact erf form) and its tanh approximation (GPT-2) are options.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from transformerkit.config import Activation

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class PositionwiseFeedForward(nn.Module):
    """x: (batch, seq, d_model) → (batch, seq, d_model)."""

    def __init__(self, d_model: int, d_ff: int, activation: Activation = "relu", bias: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.activation = ACTIVATIONS[activation]
        for linear in (self.linear1, self.linear2):
            nn.init.xavier_uniform_(linear.weight)
            if bias:
                nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.activation(self.linear1(x)))
