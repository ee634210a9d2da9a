"""The parts of the Transformer (§3): embeddings, attention, feed-forward, residual blocks, stacks."""

from transformerkit.nn.attention import MultiHeadAttention
from transformerkit.nn.attention_kernels import fused_attention, reference_attention
from transformerkit.nn.embedding import (InputEmbedding, LearnedPositionalEmbedding, PatchEmbedding, RotaryEmbedding,
                                         SinusoidalPositionalEncoding, TokenEmbedding)
from transformerkit.nn.feed_forward import PositionwiseFeedForward
from transformerkit.nn.kv_cache import DecoderCache, KVCache, LayerCache
from transformerkit.nn.layers import LayerAttention, ResidualNorm, TransformerLayer, TransformerStack
from transformerkit.nn.masks import causal_mask, merge_masks, padding_mask

__all__ = [
    "DecoderCache", "InputEmbedding", "KVCache", "LayerAttention", "LayerCache", "LearnedPositionalEmbedding",
    "MultiHeadAttention", "PatchEmbedding", "PositionwiseFeedForward", "ResidualNorm", "RotaryEmbedding",
    "SinusoidalPositionalEncoding", "TokenEmbedding", "TransformerLayer", "TransformerStack", "causal_mask",
    "fused_attention", "merge_masks", "padding_mask", "reference_attention",
]
