"""The decoder-only Transformer (GPT): the paper's decoder without cross-attention, as a language model.

    h      = Decoder(Dropout(Emb(x) + P(positions)), causal)                 (batch, seq, d_model)
    logits = h Eᵀ                                                            (batch, seq, vocab)
    loss   = −(1/T) Σ_t log softmax(logits_t)[x_{t+1}]                       next-token prediction

With the ``gpt2*`` presets this is GPT-2's layout (pre-norm, learned positions, tanh-approximate
GELU, a final LayerNorm, unscaled embeddings tied to the output projection); the paper's options
(sinusoidal or rotary positions, post-norm, ReLU, √d_model scaling) stay available.

Padding: a batch of prompts of different lengths is padded on the left and comes with an
``attention_mask`` (batch, seq), True at real tokens. Padding keys are masked out, and each
token's position counts only the real tokens before it, so a prompt's outputs do not depend on
how much padding its batch needed (as in Hugging Face's ``generate``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transformerkit.config import DecoderOnlyConfig
from transformerkit.models import builders
from transformerkit.models.common import TransformerModel
from transformerkit.nn.kv_cache import DecoderCache, positions_after
from transformerkit.nn.layers import LayerAttention

IGNORE_INDEX = -100
"""Target id excluded from the loss (Hugging Face's convention), e.g. at padding."""


def positions_from_mask(attention_mask: Tensor, new: int) -> Tensor:
    """Positions of the last ``new`` tokens, counting only real tokens: (batch, total) bool → (batch, new).

    Left padding gets position 0 (it is masked out anyway).
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)[:, -new:]


class DecoderOnlyTransformer(TransformerModel):
    model_type = "transformerkit-decoder-only"
    """``model_type`` in the ``config.json`` of a saved model."""

    config_class = DecoderOnlyConfig
    requires = "a decoder-only model has no encoder (num_encoder_layers = 0) and one vocabulary"
    config: DecoderOnlyConfig

    def __init__(self, config: DecoderOnlyConfig) -> None:
        super().__init__(config)
        tokens = builders.token_embedding(config, config.vocab_size, padding=False)
        self.embedding = builders.input_embedding(config, tokens)
        self.decoder = builders.transformer_stack(config, config.num_decoder_layers, cross_attention=False)
        self.output_projection = builders.output_projection(config, tokens)

    def hidden_states(self, ids: Tensor, attention_mask: Tensor | None = None, cache: DecoderCache | None = None,
                      need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]:
        """ids: (batch, new) → (batch, new, d_model).

        attention_mask: (batch, cached + new) bool, True at real tokens (None: no padding).
        cache: keys/values of earlier tokens; the new ones are appended.
        """
        batch, new = ids.shape
        mask = None
        if attention_mask is None:
            positions = positions_after(cache, batch, new, device=ids.device)
        else:
            expected = (cache.length if cache is not None else 0) + new
            if attention_mask.shape != (batch, expected):
                raise ValueError(f"attention_mask must be (batch, cached + new) = {(batch, expected)}, "
                                 f"got {tuple(attention_mask.shape)}")
            attention_mask = attention_mask.bool()
            positions = positions_from_mask(attention_mask, new)
            mask = attention_mask[:, None, None, :]
        x = self.embedding(ids, positions)
        return self.decoder(x, mask=mask, causal=True, positions=positions, cache=cache, need_weights=need_weights)

    def logits(self, hidden: Tensor) -> Tensor:
        """(batch, seq, d_model) → (batch, seq, vocab)."""
        return self.output_projection(hidden)

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None, cache: DecoderCache | None = None) -> Tensor:
        """Next-token logits at every position: ids (batch, seq) → (batch, seq, vocab)."""
        hidden, _ = self.hidden_states(ids, attention_mask, cache)
        return self.logits(hidden)

    def loss(self, inputs: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy of ``targets`` (batch, seq) (the inputs shifted by one; ``IGNORE_INDEX`` is
        skipped) with label smoothing ``config.label_smoothing``; ``mean`` or ``sum`` over tokens."""
        logits = self(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.config.label_smoothing, reduction=reduction)

    def new_cache(self, capacity: int) -> DecoderCache:
        """An empty key/value cache for up to ``capacity`` positions (prompt + generated)."""
        return DecoderCache.create(len(self.decoder.layers), capacity)

    def parameter_parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        return {"embeddings": [self.embedding], "decoder": [self.decoder],
                "output_projection": [self.output_projection]}
