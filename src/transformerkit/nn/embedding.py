"""Token embeddings and position information (§3.4, §3.5).

Self-attention is blind to order, so position must be added: the paper adds a fixed sinusoidal
table to the scaled token embeddings; Table 3 row E tries learned positions instead; rotary
embeddings (Su et al., 2021) rotate queries and keys inside attention instead of adding anything.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transformerkit.nn.dropout import Dropout


class TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(d_model) (§3.4: "we multiply those weights by √d_model").

    ids: (batch, seq) → (batch, seq, d_model).  ``weight`` (vocab, d_model) can be shared with the
    pre-softmax projection (weight tying).
    """

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None = None, scale: bool = True) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=d_model ** -0.5)
        if padding_idx is not None:
            with torch.no_grad():
                self.embedding.weight[padding_idx].zero_()
        self.scale = math.sqrt(d_model) if scale else 1.0

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight

    def forward(self, ids: Tensor) -> Tensor:
        return self.embedding(ids) * self.scale


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoids (§3.5), no parameters.

    PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))

    positions: (batch, seq) integer → (batch, seq, d_model). Computed from the positions given, so
    any length and any offset (cached decoding, left padding) works.
    """

    def __init__(self, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {d_model}")
        # 1 / 10000^(2i/d_model) for i = 0 .. d_model/2 - 1
        inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        angles = positions.to(self.inv_freq.dtype)[..., None] * self.inv_freq  # (batch, seq, d_model/2)
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # interleave: 2i sin, 2i+1 cos


class LearnedPositionalEmbedding(nn.Module):
    """A learned vector per position (Table 3 row E): positions (batch, seq) → (batch, seq, d_model)."""

    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.embedding = nn.Embedding(max_positions, d_model)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=d_model ** -0.5)

    def forward(self, positions: Tensor) -> Tensor:
        # checked eagerly; a graph being exported (ONNX) cannot branch on a tensor's value
        if not torch.compiler.is_exporting() and positions.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(f"position {int(positions.max())} is beyond max_positions={self.max_positions}")
        return self.embedding(positions)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer, Su et al. 2021), applied to queries and keys per head.

    Each pair of features (j, j + d/2) of a head is rotated by the angle pos · θ_j with
    θ_j = base^(-2j/d):  [x1, x2] → [x1 cos − x2 sin, x2 cos + x1 sin]. The dot product of a rotated
    query and key then depends only on their relative position.

    x: (batch, heads, seq, d), positions: (batch, seq) → (batch, heads, seq, d).
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"d_k must be even for rotary positions, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        angles = positions.to(self.inv_freq.dtype)[:, None, :, None] * self.inv_freq  # (batch, 1, seq, d/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class InputEmbedding(nn.Module):
    """Input of a stack: Dropout(TokenEmbedding(ids) + PE(positions)) (§3.4, §3.5, §5.4).

    With rotary positions nothing is added here; the attention layers rotate queries and keys.
    BERT's options: ``segments`` adds a learned token-type (sentence A/B) vector, and ``norm``
    applies LayerNorm to the sum before dropout.
    ids, positions, token_types: (batch, seq) → (batch, seq, d_model).
    """

    def __init__(self, tokens: TokenEmbedding, positional: nn.Module | None, dropout: float,
                 segments: nn.Embedding | None = None, norm: nn.LayerNorm | None = None) -> None:
        super().__init__()
        self.tokens = tokens
        self.positional = positional
        self.segments = segments
        self.norm = norm
        self.dropout = Dropout(dropout)

    def forward(self, ids: Tensor, positions: Tensor, token_types: Tensor | None = None) -> Tensor:
        x = self.tokens(ids)
        if self.positional is not None:
            x = x + self.positional(positions).to(x.dtype)
        if self.segments is not None:
            x = x + self.segments(token_types if token_types is not None else torch.zeros_like(ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class PatchEmbedding(nn.Module):
    """An image as a sequence of patch tokens (ViT, Dosovitskiy et al., 2021): each P×P patch is
    flattened and mapped linearly to d_model, which is a convolution with kernel and stride P.

    images: (batch, channels, H, W) → (batch, (H/P)·(W/P), d_model), patches in raster order.
    """

    def __init__(self, num_channels: int, patch_size: int, d_model: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(num_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.projection(images).flatten(2).transpose(1, 2)
