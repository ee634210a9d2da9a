"""Scaled dot-product attention and multi-head attention (§3.2).

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V                                     (§3.2.1, eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O,
        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)                                (§3.2.2)
    with W_i^Q, W_i^K ∈ R^{d_model×d_k}, W_i^V ∈ R^{d_model×d_v}, W^O ∈ R^{h·d_v×d_model}.

Two kernels compute the same function on the same weights:

* ``reference``: the formula written out; it can return the attention weights (for plots).
* ``fused``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
  kernels where the device has them).

Masks are boolean, broadcastable to (batch, heads, query_len, key_len), ``True`` = may attend
(see :mod:`transformerkit.nn.masks`). A query row whose keys are all masked out returns zeros.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformerkit.config import AttentionKernel
from transformerkit.nn.embedding import RotaryEmbedding
from transformerkit.nn.kv_cache import KVCache
from transformerkit.nn.masks import causal_mask, merge_masks

KERNELS: tuple[AttentionKernel, ...] = ("fused", "reference")


def _guard_empty_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Let fully masked query rows attend everywhere (finite softmax, finite gradients) and return
    which rows had at least one key, so their output can be zeroed afterwards.

    mask: (..., q, k) → (mask', has_key: (..., q, 1))
    """
    has_key = mask.any(dim=-1, keepdim=True)
    return mask | ~has_key, has_key


def reference_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                        dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / √d_k) V, written from the formula.

    q: (batch, heads, q_len, d_k), k: (batch, heads, k_len, d_k), v: (batch, heads, k_len, d_v),
    mask: bool broadcastable to (batch, heads, q_len, k_len)
    → output (batch, heads, q_len, d_v), weights (batch, heads, q_len, k_len).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    has_key = None
    if mask is not None:
        mask, has_key = _guard_empty_rows(mask)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    if has_key is not None:
        weights = weights * has_key
    output = F.dropout(weights, p=dropout_p) @ v if dropout_p > 0 else weights @ v
    return output, weights


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False,
                    dropout_p: float = 0.0) -> Tensor:
    """The same function through ``F.scaled_dot_product_attention``; shapes as :func:`reference_attention`.

    ``causal=True`` with no other mask and q_len == k_len takes SDPA's ``is_causal`` fast path; a
    single query (one decoding step) is the newest position, so the causal mask allows every key.
    """
    if causal and q.shape[2] == 1:
        causal = False
    if causal and mask is None and q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if causal:
        mask = merge_masks(mask, causal_mask(q.shape[2], k.shape[2], q.device))
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask, has_key = _guard_empty_rows(mask)
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return output * has_key


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate per-head widths d_k (queries, keys) and d_v (values).

    Self-attention: ``forward(x)``; cross-attention: ``forward(x, memory=encoder_output)``
    (queries from the decoder, keys and values from the encoder, §3.2.3).

    x: (batch, q_len, d_model), memory: (batch, k_len, d_model) → (batch, q_len, d_model), and the
    attention weights (batch, heads, q_len, k_len) when ``need_weights`` (reference kernel).

    With a :class:`KVCache`, self-attention appends the new keys/values and attends over all cached
    positions; cross-attention projects ``memory`` on the first call and reuses it afterwards.
    """

    def __init__(self, d_model: int, num_heads: int, d_k: int, d_v: int, dropout: float = 0.0,
                 bias: bool = True, rotary: RotaryEmbedding | None = None,
                 kernel: AttentionKernel = "fused") -> None:
        super().__init__()
        self.num_heads, self.d_k, self.d_v = num_heads, d_k, d_v
        self.q_proj = nn.Linear(d_model, num_heads * d_k, bias=bias)
        self.k_proj = nn.Linear(d_model, num_heads * d_k, bias=bias)
        self.v_proj = nn.Linear(d_model, num_heads * d_v, bias=bias)
        self.out_proj = nn.Linear(num_heads * d_v, d_model, bias=bias)
        self.dropout = dropout
        self.rotary = rotary
        self.kernel = kernel
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
            if bias:
                nn.init.zeros_(linear.bias)

    @property
    def kernel(self) -> AttentionKernel:
        return self._kernel

    @kernel.setter
    def kernel(self, name: AttentionKernel) -> None:
        if name not in KERNELS:
            raise ValueError(f"attention kernel must be one of {KERNELS}, got {name!r}")
        self._kernel = name

    def _heads(self, x: Tensor, width: int) -> Tensor:
        """(batch, seq, heads·width) → (batch, heads, seq, width)."""
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, width).transpose(1, 2)

    def forward(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None,
                causal: bool = False, positions: Tensor | None = None, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """
        mask: bool, broadcastable to (batch, heads, q_len, k_len) where k_len counts cached keys.
        causal: also forbid attending to later positions (self-attention).
        positions: (batch, q_len) absolute positions of ``x``'s tokens (used by rotary embeddings).
        """
        q = self._heads(self.q_proj(x), self.d_k)
        if memory is None:  # self-attention: keys and values from the same tokens
            k = self._heads(self.k_proj(x), self.d_k)
            v = self._heads(self.v_proj(x), self.d_v)
            if self.rotary is not None:
                if positions is None:
                    raise ValueError("rotary attention needs the tokens' positions")
                q, k = self.rotary(q, positions), self.rotary(k, positions)
            if cache is not None:
                k, v = cache.append(k, v)
        elif cache is not None and cache.length:  # cross-attention, memory already projected
            k, v = cache.keys, cache.values
        else:
            k = self._heads(self.k_proj(memory), self.d_k)
            v = self._heads(self.v_proj(memory), self.d_v)
            if cache is not None:
                cache.append(k, v)

        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights or self.kernel == "reference":
            if causal:
                mask = merge_masks(mask, causal_mask(q.shape[2], k.shape[2], q.device))
            out, weights = reference_attention(q, k, v, mask, dropout_p)
        else:
            out = fused_attention(q, k, v, mask, causal, dropout_p)
        batch, _, q_len, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, q_len, self.num_heads * self.d_v)
        return self.out_proj(out), weights
