"""Scaled dot-product attention and multi-head attention (§3.2).

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V                                     (§3.2.1, eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O,
        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)                                (§3.2.2)
    with W_i^Q, W_i^K ∈ R^{d_model×d_k}, W_i^V ∈ R^{d_model×d_v}, W^O ∈ R^{h·d_v×d_model}.

The product itself runs on the kernel the module's ``kernel`` names, from one registry
(:data:`transformerkit.nn.attention_kernels.ATTENTION_KERNELS`): the formula written out, which
returns the attention weights, ``F.scaled_dot_product_attention``, or ``auto`` (the faster of
the two as measured), all with the same weights.

Masks are boolean, broadcastable to (batch, heads, query_len, key_len), ``True`` = may attend
(see :mod:`transformerkit.nn.masks`). A query row whose keys are all masked out returns zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
from torch import Tensor, nn

from transformerkit.config import AttentionKernel
from transformerkit.nn.attention_kernels import ATTENTION_KERNELS, attend
from transformerkit.nn.embedding import RotaryEmbedding
from transformerkit.nn.kv_cache import KVCache
from transformerkit.nn.packing import TokenPacking

T = TypeVar("T")


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate per-head widths d_k (queries, keys) and d_v (values).

    Self-attention: ``forward(x)``; cross-attention (``cross=True``): ``forward(x, memory=encoder_output)``
    (queries from the decoder, keys and values from the encoder, §3.2.3).

    The per-head projections W_i^Q, W_i^K, W_i^V are stored side by side in one matrix, so one
    matrix product computes them all: ``qkv_proj`` (d_model → h·(2·d_k + d_v)) in self-attention;
    ``q_proj`` (d_model → h·d_k) and ``kv_proj`` (d_model → h·(d_k + d_v)) in cross-attention,
    whose keys and values come from another sequence. Checkpoints with separate ``q_proj``,
    ``k_proj``, ``v_proj`` still load (they are concatenated on load).

    x: (batch, q_len, d_model), memory: (batch, k_len, d_model) → (batch, q_len, d_model), and the
    attention weights (batch, heads, q_len, k_len) when ``need_weights`` (reference kernel).

    With a :class:`KVCache`, self-attention appends the new keys/values and attends over all cached
    positions; cross-attention projects ``memory`` on the first call and reuses it afterwards.

    Cross-attention also takes ``memory`` with fewer rows than ``x`` (batch = g · mem_batch: a
    sentence's g beams over its one row of encoder output, laid out so by the decoding code,
    :class:`transformerkit.generation.decoders.Seq2SeqDecoder`): its keys and values are then
    projected and cached once per sentence, and :func:`~transformerkit.nn.attention_kernels.attend`
    reads them once per group.
    """

    def __init__(self, d_model: int, num_heads: int, d_k: int, d_v: int, dropout: float = 0.0,
                 bias: bool = True, rotary: RotaryEmbedding | None = None,
                 kernel: AttentionKernel = "auto", cross: bool = False) -> None:
        super().__init__()
        self.num_heads, self.d_k, self.d_v, self.cross = num_heads, d_k, d_v, cross
        self.widths = [num_heads * d_k, num_heads * d_k, num_heads * d_v]  # Q, K, V
        if cross:
            self.q_proj = nn.Linear(d_model, self.widths[0], bias=bias)
            self.kv_proj = nn.Linear(d_model, self.widths[1] + self.widths[2], bias=bias)
            parts = [(self.q_proj, self.widths[:1]), (self.kv_proj, self.widths[1:])]
        else:
            self.qkv_proj = nn.Linear(d_model, sum(self.widths), bias=bias)
            parts = [(self.qkv_proj, self.widths)]
        self.out_proj = nn.Linear(num_heads * d_v, d_model, bias=bias)
        parts.append((self.out_proj, [d_model]))
        self.dropout = dropout
        self.rotary = rotary
        self.kernel = kernel
        with torch.no_grad():
            for linear, widths in parts:  # Glorot-uniform per projection, as if each were its own matrix
                for block in linear.weight.split(widths):
                    nn.init.xavier_uniform_(block)
                if bias:
                    nn.init.zeros_(linear.bias)
        self.register_load_state_dict_pre_hook(_fuse_separate_projections)

    @property
    def kernel(self) -> AttentionKernel:
        return self._kernel

    @kernel.setter
    def kernel(self, name: AttentionKernel) -> None:
        if name not in ATTENTION_KERNELS:
            raise ValueError(f"attention kernel must be one of {', '.join(ATTENTION_KERNELS)}, got {name!r}")
        self._kernel = name

    def _heads(self, x: Tensor, width: int) -> Tensor:
        """(batch, seq, heads·width) → (batch, heads, seq, width)."""
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, width).transpose(1, 2)

    def forward(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None,
                causal: bool = False, positions: Tensor | None = None, cache: KVCache | None = None,
                need_weights: bool = False, packing: TokenPacking | None = None) -> tuple[Tensor, Tensor | None]:
        """
        mask: bool, broadcastable to (batch, heads, q_len, k_len) where k_len counts cached keys.
        causal: also forbid attending to later positions (self-attention).
        positions: (batch, q_len) absolute positions of ``x``'s tokens (used by rotary embeddings).
        packing: self-attention without a cache only; ``x`` is then the packed real tokens
        (tokens, d_model) and so is the result (:mod:`transformerkit.nn.packing`).
        """
        if (memory is not None) != self.cross:
            raise ValueError("cross-attention needs memory, self-attention takes none")
        if packing is not None and (memory is not None or cache is not None):
            raise ValueError("packed tokens are for self-attention without a cache")
        if memory is None:  # self-attention: queries, keys and values from the same tokens
            projected = self.qkv_proj(x)
            if packing is not None:
                projected = packing.unpack(projected)
            q, k, v = (self._heads(t, width) for t, width in
                       zip(projected.split(self.widths, dim=-1), (self.d_k, self.d_k, self.d_v)))
            if self.rotary is not None:
                if positions is None:
                    raise ValueError("rotary attention needs the tokens' positions")
                q, k = self.rotary(q, positions), self.rotary(k, positions)
            if cache is not None:
                k, v = cache.append(k, v)
        else:
            q = self._heads(self.q_proj(x), self.d_k)
            if cache is not None and cache.length:  # memory already projected
                k, v = cache.keys, cache.values
            else:
                k, v = self.kv_proj(memory).split(self.widths[1:], dim=-1)
                k, v = self._heads(k, self.d_k), self._heads(v, self.d_v)
                if cache is not None:
                    cache.append(k, v)

        out, weights = attend(q, k, v, mask, causal, self.dropout if self.training else 0.0, self.kernel, need_weights)
        batch, _, q_len, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, q_len, self.num_heads * self.d_v)
        if packing is not None:
            out = packing.pack(out)
        return self.out_proj(out), weights


_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "kv_proj": ("k_proj", "v_proj")}


def fuse_legacy_projections(wanted: Iterable[str], values: dict[str, T], combine: Callable[[list[T]], T]) -> None:
    """Combine, in place, entries keyed by the separate ``q_proj``/``k_proj``/``v_proj`` names of
    older checkpoints under the fused names in ``wanted`` (``….qkv_proj.weight``, ``….kv_proj.bias``,
    …): weights and biases are stacked by :func:`torch.cat`; optimizer states entry by entry."""
    for name in wanted:
        for fused, parts in _FUSED.items():
            prefix, found, kind = f".{name}".rpartition(f".{fused}.")
            old = [f"{prefix}.{part}.{kind}"[1:] for part in parts]
            if found and name not in values and all(key in values for key in old):
                values[name] = combine([values.pop(key) for key in old])


def _fuse_separate_projections(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
    """Load a checkpoint written with separate ``q_proj``/``k_proj``/``v_proj`` matrices (a load pre-hook)."""
    wanted = [f"{prefix}{name}" for name, _ in module.named_parameters() if name.startswith(tuple(_FUSED))]
    fuse_legacy_projections(wanted, state_dict, torch.cat)


def use_attention_kernel(model: nn.Module, kernel: AttentionKernel) -> int:
    """Compute every :class:`MultiHeadAttention` of ``model`` with ``kernel`` (in place; the
    weights and the model's configuration stay as they are); how many there are."""
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    for module in modules:
        module.kernel = kernel
    return len(modules)
