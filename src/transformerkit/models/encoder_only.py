"""The encoder-only Transformer (BERT): the paper's encoder stack read out per token or per sequence.

    h      = Encoder(Dropout(LN(Emb(x) + P(positions) + S(token_types))), padding mask)   (batch, seq, d_model)
    pooled = tanh(W_p h[:, 0] + b_p)                                                        (batch, d_model)

and, each when configured, a head on top:

    classification (``config.labels``)    logits = W_c Dropout(pooled) + b_c            (batch, labels)
    span (``config.span_head``)           start, end = split(h W_s + b_s)              (batch, seq) each
    masked LM (``config.masked_lm_head``) logits = LN(act(h W_t + b_t)) Eᵀ + b_v         (batch, seq, vocab)

where E is the token embedding matrix (tied, as in BERT).

With BERT's settings (post-norm, learned positions, token types, a LayerNorm over the input
embeddings, GELU, unscaled embeddings) the weights of Hugging Face ``BertModel`` checkpoints
load unchanged (:mod:`transformerkit.interop.bert`). Padding is on the right, as BERT's
tokenizers pad; ``attention_mask`` (batch, seq) is True at real tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformerkit.config import EncoderOnlyConfig
from transformerkit.models import builders
from transformerkit.models.common import TransformerModel
from transformerkit.nn.dropout import Dropout
from transformerkit.nn.feed_forward import ACTIVATIONS
from transformerkit.nn.kv_cache import positions_after
from transformerkit.nn.layers import LayerAttention


class EncoderOnlyTransformer(TransformerModel):
    model_type = "transformerkit-encoder-only"
    """``model_type`` in the ``config.json`` of a saved model."""

    config_class = EncoderOnlyConfig
    requires = "an encoder-only model has no decoder (num_decoder_layers = 0)"
    config: EncoderOnlyConfig

    def __init__(self, config: EncoderOnlyConfig) -> None:
        super().__init__(config)
        self.embedding = builders.input_embedding(config, builders.token_embedding(config, config.vocab_size))
        self.encoder = builders.transformer_stack(config, config.num_encoder_layers, cross_attention=False)
        self.pooler = nn.Linear(config.d_model, config.d_model) if config.pooler else None
        self.span_head = nn.Linear(config.d_model, 2) if config.span_head else None
        self.masked_lm_head = (MaskedLMHead(config, builders.output_projection(config, self.embedding.tokens))
                               if config.masked_lm_head else None)
        self.classifier = None
        if config.labels:
            if len(set(config.labels)) != len(config.labels):
                raise ValueError(f"labels must be distinct, got {config.labels}")
            self.classifier = nn.Sequential(Dropout(config.dropout), nn.Linear(config.d_model, len(config.labels)))

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None, token_types: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]:
        """ids, attention_mask, token_types: (batch, seq) → hidden states (batch, seq, d_model).

        Without ``attention_mask`` every token that is not ``pad_id`` is attended to.
        """
        if attention_mask is None:
            attention_mask = ids != self.config.pad_id
        positions = positions_after(None, *ids.shape, device=ids.device)
        x = self.embedding(ids, positions, token_types)
        return self.encoder(x, mask=attention_mask.bool()[:, None, None, :], positions=positions,
                            need_weights=need_weights)

    def pooled(self, hidden: Tensor) -> Tensor:
        """BERT's pooler: tanh of a linear map of the first ([CLS]) token: (batch, seq, d) → (batch, d)."""
        if self.pooler is None:
            raise ValueError("the model has no pooler (config.pooler is false)")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def classify(self, ids: Tensor, attention_mask: Tensor | None = None, token_types: Tensor | None = None) -> Tensor:
        """Class logits (batch, len(config.labels)) from the pooled [CLS] state (BERT's sequence classifier)."""
        if self.classifier is None:
            raise ValueError("the model has no classification head (config.labels is empty)")
        hidden, _ = self(ids, attention_mask, token_types)
        return self.classifier(self.pooled(hidden))

    def span_logits(self, ids: Tensor, attention_mask: Tensor | None = None,
                    token_types: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Start and end logits of an answer span, (batch, seq) each (BERT's extractive QA head)."""
        if self.span_head is None:
            raise ValueError("the model has no span head (config.span_head is false)")
        hidden, _ = self(ids, attention_mask, token_types)
        start, end = self.span_head(hidden).unbind(dim=-1)
        return start, end

    def masked_lm_logits(self, ids: Tensor, attention_mask: Tensor | None = None,
                         token_types: Tensor | None = None) -> Tensor:
        """Vocabulary logits at every position (batch, seq, vocab) (BERT's masked-LM head)."""
        if self.masked_lm_head is None:
            raise ValueError("the model has no masked-LM head (config.masked_lm_head is false)")
        hidden, _ = self(ids, attention_mask, token_types)
        return self.masked_lm_head(hidden)

    @staticmethod
    def mean_pooled(hidden: Tensor, attention_mask: Tensor, normalize: bool = True) -> Tensor:
        """Sentence embeddings as sentence-transformers computes them: the mean of the real tokens'
        states, L2-normalized. hidden (batch, seq, d), attention_mask (batch, seq) → (batch, d)."""
        weights = attention_mask.to(hidden.dtype)[..., None]
        mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(mean, p=2, dim=-1) if normalize else mean

    def parameter_parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        heads = [h for h in (self.classifier, self.span_head, self.masked_lm_head) if h is not None]
        return {"embeddings": [self.embedding], "encoder": [self.encoder],
                "pooler": [self.pooler] if self.pooler is not None else [], "heads": heads}


class MaskedLMHead(nn.Module):
    """BERT's masked-LM head: h (batch, seq, d) → LN(act(h W_t + b_t)) Eᵀ + b_v (batch, seq, vocab).

    ``projection`` is the d → vocab map without bias (tied to the token embeddings by the builder).
    """

    def __init__(self, config: EncoderOnlyConfig, projection: nn.Linear) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.activation = ACTIVATIONS[config.activation]
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.projection = projection
        self.bias = nn.Parameter(torch.zeros(projection.out_features))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.projection(self.norm(self.activation(self.dense(hidden)))) + self.bias
