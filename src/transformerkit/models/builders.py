"""Builders that compose the parts in :mod:`transformerkit.nn` into stacks from a config."""

from __future__ import annotations

from torch import nn

from transformerkit.config import TextConfig, TransformerConfig
from transformerkit.nn.attention import MultiHeadAttention
from transformerkit.nn.embedding import (InputEmbedding, LearnedPositionalEmbedding, RotaryEmbedding,
                                         SinusoidalPositionalEncoding, TokenEmbedding)
from transformerkit.nn.feed_forward import PositionwiseFeedForward
from transformerkit.nn.layers import TransformerLayer, TransformerStack


def attention(config: TransformerConfig, rotary: bool, cross: bool = False) -> MultiHeadAttention:
    return MultiHeadAttention(
        config.d_model, config.num_heads, config.head_dim_k, config.head_dim_v,
        dropout=config.attention_dropout, bias=config.bias,
        rotary=RotaryEmbedding(config.head_dim_k, config.rotary_base) if rotary else None,
        kernel=config.attention_kernel, cross=cross)


def transformer_stack(config: TransformerConfig, num_layers: int, cross_attention: bool) -> TransformerStack:
    """N layers of self-attention (+ cross-attention when ``cross_attention``) and feed-forward."""
    rotary = config.positional == "rotary"
    layers = [
        TransformerLayer(
            self_attention=attention(config, rotary),
            feed_forward=PositionwiseFeedForward(config.d_model, config.d_ff, config.activation, config.bias),
            d_model=config.d_model, dropout=config.dropout, norm_position=config.norm_position,
            eps=config.layer_norm_eps,
            # queries and keys of cross-attention come from different sequences: no rotation
            cross_attention=attention(config, rotary=False, cross=True) if cross_attention else None)
        for _ in range(num_layers)
    ]
    return TransformerStack(layers, config.d_model, config.norm_position, config.layer_norm_eps)


def input_embedding(config: TextConfig, tokens: TokenEmbedding) -> InputEmbedding:
    """Token embedding plus the configured positional information (and BERT's token types and
    LayerNorm when configured), then dropout."""
    positional = {
        "sinusoidal": lambda: SinusoidalPositionalEncoding(config.d_model),
        "learned": lambda: LearnedPositionalEmbedding(config.max_positions, config.d_model),
        "rotary": lambda: None,
    }[config.positional]()
    segments = None
    if config.type_vocab_size:
        # as small as the token embeddings: nn.Embedding's N(0, 1) would add one vector ~20× their size to
        # every position, and the LayerNorm after the sum would then erase which token is where
        segments = nn.Embedding(config.type_vocab_size, config.d_model)
        nn.init.normal_(segments.weight, std=config.d_model ** -0.5)
    norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.embedding_norm else None
    return InputEmbedding(tokens, positional, config.dropout, segments, norm)


def token_embedding(config: TextConfig, vocab_size: int, padding: bool = True) -> TokenEmbedding:
    """Token embedding; with ``padding`` the pad id's row is zero and never trained (``padding_idx``).

    Decoder-only models pass ``padding=False``: GPT-2 pads with <|endoftext|>, a real token.
    """
    return TokenEmbedding(vocab_size, config.d_model, padding_idx=config.pad_id if padding else None,
                          scale=config.scale_embeddings)


def output_projection(config: TextConfig, tokens: TokenEmbedding) -> nn.Linear:
    """The pre-softmax linear map (d_model → vocab, no bias), sharing ``tokens``' matrix when
    ``config.tie_embeddings`` (§3.4)."""
    vocab_size, d_model = tokens.weight.shape
    projection = nn.Linear(d_model, vocab_size, bias=False)
    if config.tie_embeddings:
        projection.weight = tokens.weight
    else:
        nn.init.normal_(projection.weight, std=d_model ** -0.5)
    return projection
