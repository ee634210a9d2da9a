"""Residual blocks, the Transformer layer, and stacks of N layers (§3.1).

An encoder layer is self-attention then feed-forward; a decoder layer puts cross-attention over
the encoder output between the two. Both are :class:`TransformerLayer` (``cross_attention``
on or off), so decoder-only (GPT) and encoder-only (BERT, ViT) models compose the same class.

Every sub-layer is wrapped in a residual connection with layer normalization:

    post-norm (the paper, §3.1):  x ← LayerNorm(x + Dropout(Sublayer(x)))
    pre-norm (option):            x ← x + Dropout(Sublayer(LayerNorm(x)))

A pre-norm stack ends with one more LayerNorm, since its residual stream is never normalized.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from transformerkit.config import NormPosition
from transformerkit.nn.attention import MultiHeadAttention
from transformerkit.nn.dropout import Dropout
from transformerkit.nn.feed_forward import PositionwiseFeedForward
from transformerkit.nn.kv_cache import DecoderCache, LayerCache
from transformerkit.nn.packing import TokenPacking, packing_for


class ResidualNorm(nn.Module):
    """The residual connection and layer normalization around one sub-layer.

    Use as ``y = sublayer(block.before(x)); x = block.after(x, y)``:
    ``before`` normalizes the sub-layer's input in pre-norm, ``after`` adds the residual and
    normalizes the sum in post-norm. x, y: (batch, seq, d_model).
    """

    def __init__(self, d_model: int, dropout: float, norm_position: NormPosition = "post", eps: float = 1e-5) -> None:
        super().__init__()
        if norm_position not in ("post", "pre"):
            raise ValueError(f"norm_position must be 'post' or 'pre', got {norm_position!r}")
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = Dropout(dropout)
        self.pre_norm = norm_position == "pre"

    def before(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def after(self, x: Tensor, y: Tensor) -> Tensor:
        x = x + self.dropout(y)
        return x if self.pre_norm else self.norm(x)


@dataclass
class LayerAttention:
    """Attention weights of one layer, each (batch, heads, q_len, k_len); cross is None in an
    encoder, self is None in a recurrent decoder (it attends only to the encoder)."""

    self_attention: Tensor | None
    cross_attention: Tensor | None = None


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each in a :class:`ResidualNorm`.

    x: (batch, seq, d_model), memory: (batch, mem_len, d_model) → (batch, seq, d_model); with
    ``packing`` x is the packed real tokens (tokens, d_model) and so is the result.
    """

    def __init__(self, self_attention: MultiHeadAttention, feed_forward: PositionwiseFeedForward,
                 d_model: int, dropout: float, norm_position: NormPosition = "post", eps: float = 1e-5,
                 cross_attention: MultiHeadAttention | None = None) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.self_attention_block = ResidualNorm(d_model, dropout, norm_position, eps)
        self.cross_attention = cross_attention
        self.cross_attention_block = (
            ResidualNorm(d_model, dropout, norm_position, eps) if cross_attention is not None else None)
        self.feed_forward = feed_forward
        self.feed_forward_block = ResidualNorm(d_model, dropout, norm_position, eps)

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False,
                memory: Tensor | None = None, memory_mask: Tensor | None = None,
                positions: Tensor | None = None, cache: LayerCache | None = None,
                need_weights: bool = False,
                packing: TokenPacking | None = None) -> tuple[Tensor, LayerAttention | None]:
        y, self_weights = self.self_attention(
            self.self_attention_block.before(x), mask=mask, causal=causal, positions=positions,
            cache=cache.self_attention if cache is not None else None, need_weights=need_weights,
            packing=packing)
        x = self.self_attention_block.after(x, y)

        cross_weights = None
        if self.cross_attention is not None and self.cross_attention_block is not None:
            if memory is None:
                raise ValueError("a layer with cross-attention needs the encoder output (memory)")
            y, cross_weights = self.cross_attention(
                self.cross_attention_block.before(x), memory=memory, mask=memory_mask,
                cache=cache.cross_attention if cache is not None else None, need_weights=need_weights)
            x = self.cross_attention_block.after(x, y)

        x = self.feed_forward_block.after(x, self.feed_forward(self.feed_forward_block.before(x)))
        weights = LayerAttention(self_weights, cross_weights) if need_weights and self_weights is not None else None
        return x, weights


class TransformerStack(nn.Module):
    """N identical layers (§3.1), plus a final LayerNorm in pre-norm stacks.

    x: (batch, seq, d_model) → (batch, seq, d_model), and one :class:`LayerAttention` per layer
    when ``need_weights``. A self-attention stack given a key padding mask (batch, 1, 1, seq) with
    pads computes on the real tokens only (:mod:`transformerkit.nn.packing`); its outputs at pad
    positions are then zero.
    """

    def __init__(self, layers: list[TransformerLayer], d_model: int, norm_position: NormPosition = "post",
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(d_model, eps=eps) if norm_position == "pre" else None

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False,
                memory: Tensor | None = None, memory_mask: Tensor | None = None,
                positions: Tensor | None = None, cache: DecoderCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]:
        if cache is not None and len(cache.layers) != len(self.layers):
            raise ValueError(f"cache has {len(cache.layers)} layers, the stack has {len(self.layers)}")
        packing = packing_for(x, mask) if memory is None and cache is None else None
        if packing is not None:
            x = packing.pack(x)
        attention: list[LayerAttention] = []
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, mask=mask, causal=causal, memory=memory, memory_mask=memory_mask,
                               positions=positions, cache=cache.layers[i] if cache is not None else None,
                               need_weights=need_weights, packing=packing)
            if weights is not None:
                attention.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return (x if packing is None else packing.unpack(x)), attention
