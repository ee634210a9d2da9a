"""The recurrent language model: the baseline the decoder-only Transformer replaced (Zaremba et al.,
2014; Merity et al., 2018), a stack of PyTorch's own recurrent layers (``nn.LSTM`` / ``nn.GRU``)
between a token embedding and the tied output projection.

    e_t        = Dropout(E x_t)                                  (batch, T, d)
    h_t        = LSTM(e_t, h_{t−1})                              every layer, (batch, T, d)
    logits_t   = Dropout(h_t) Eᵀ                                 (batch, T, vocab), tied
    loss       = −(1/T) Σ_t log softmax(logits_t)[x_{t+1}]       next-token prediction

Everything the model knows about x_1 … x_t when it predicts x_{t+1} is in one state vector of
``num_layers`` × d numbers (× 2 for an LSTM's cell), updated once per token: a word t − k tokens
back reaches the prediction through k recurrent steps (the paper's Table 1: path length O(n),
n sequential operations), where the decoder-only Transformer reads it directly through attention.

The model keeps the decoder-only Transformer's contract (``hidden_states(ids, attention_mask,
cache)``, ``logits``, ``forward``, ``loss``, ``new_cache``; :class:`~transformerkit.generation.
decoders.CausalLanguageModel`), so the language-modeling task, sampling, the ``generate`` verb
and the server use it unchanged. Its cache is the recurrent state after the tokens read so far.

Left padding (a batch of prompts of different lengths): each row's real tokens are packed
(``pack_padded_sequence``), so the state a prompt leaves does not depend on its batch's padding;
the outputs at padding positions are zeros.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from transformerkit.config import AttentionKernel
from transformerkit.models.common import TransformerModel
from transformerkit.models.decoder_only import IGNORE_INDEX
from transformerkit.models.rnn import RecurrentState
from transformerkit.nn.layers import LayerAttention
from transformerkit.typed_config import check_types, from_mapping


@dataclass
class RNNLanguageModelConfig:
    """The recurrent language model's shape (``model.family: rnn-lm`` in a recipe)."""

    cell: Literal["lstm", "gru"] = "lstm"
    d_model: int = 512
    """Embedding and hidden width."""
    num_layers: int = 2
    dropout: float = 0.2
    """On the embeddings, between the recurrent layers and before the output projection."""
    label_smoothing: float = 0.0
    vocab_size: int = 8000
    tie_embeddings: bool = True
    """The embedding is the output projection's matrix (Press & Wolf, 2017; Inan et al., 2017)."""
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    family: ClassVar[str] = "rnn-lm"

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("d_model", "num_layers", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a token id below the vocabulary size")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RNNLanguageModelConfig:
        return from_mapping(cls, values)

    def replace(self, **changes: Any) -> RNNLanguageModelConfig:
        return self.from_dict({**self.to_dict(), **changes})


def left_padding(real: Tensor) -> Tensor:
    """How many padding tokens each row starts with: ``real`` (batch, T) bool, True at real
    tokens → (batch, 1); ``ValueError`` where padding is not all on the left."""
    pads = (~real).sum(dim=1, keepdim=True)
    if not torch.equal(real, torch.arange(real.shape[1], device=real.device)[None, :] >= pads):
        raise ValueError("attention_mask: the recurrent language model takes left padding only "
                         "(False before True in every row)")
    return pads


class RNNLanguageModel(TransformerModel):
    """Embedding → stacked LSTM (GRU) → tied output projection (module docstring).

    ids: (batch, T) → next-token logits (batch, T, vocab).
    """

    model_type = "transformerkit-rnn-lm"
    config_class = RNNLanguageModelConfig  # type: ignore[assignment]
    requires = "a recurrent language model"
    config: RNNLanguageModelConfig  # type: ignore[assignment]

    def __init__(self, config: RNNLanguageModelConfig) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        d, cell = config.d_model, {"lstm": nn.LSTM, "gru": nn.GRU}[config.cell]
        self.embedding = nn.Embedding(config.vocab_size, d)
        self.recurrent = cell(d, d, num_layers=config.num_layers, batch_first=True,
                              dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.output_projection = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output_projection.weight = self.embedding.weight

    def hidden_states(self, ids: Tensor, attention_mask: Tensor | None = None, cache: RecurrentState | None = None,
                      need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]:
        """ids: (batch, new) → the top layer's states (batch, new, d); nothing attends, so the
        list of attention weights is empty.

        attention_mask: (batch, cached + new) bool, True at real tokens; only left padding (None: none).
        cache: the state after the earlier tokens; it is advanced past the new ones.
        """
        batch, new = ids.shape
        state = cache.state if cache is not None else None
        embedded = self.dropout(self.embedding(ids))
        real = None
        if attention_mask is not None:
            expected = (cache.length if cache is not None else 0) + new
            if attention_mask.shape != (batch, expected):
                raise ValueError(f"attention_mask must be (batch, cached + new) = {(batch, expected)}, "
                                 f"got {tuple(attention_mask.shape)}")
            real = attention_mask[:, -new:].bool()
        if real is None or bool(real.all()):
            states, state = self.recurrent(embedded, state)
        else:  # padded rows: their real tokens packed, so padding never enters the state
            pads, positions = left_padding(real), torch.arange(new, device=ids.device)[None, :]
            to_front, back = (positions + pads) % new, (positions - pads) % new  # gather indices, (batch, new)
            moved = embedded.gather(1, to_front[:, :, None].expand_as(embedded))
            packed = pack_padded_sequence(moved, (new - pads[:, 0]).clamp(min=1).cpu(), batch_first=True,
                                          enforce_sorted=False)
            states, state = self.recurrent(packed, state)
            states, _ = pad_packed_sequence(states, batch_first=True, total_length=new)
            states = states.gather(1, back[:, :, None].expand_as(states))
        if cache is not None:
            cache.state, cache.length = state, cache.length + new
        return self.dropout(states), []

    def logits(self, hidden: Tensor) -> Tensor:
        """(batch, T, d) → (batch, T, vocab)."""
        return self.output_projection(hidden)

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None, cache: RecurrentState | None = None) -> Tensor:
        """Next-token logits at every position: ids (batch, T) → (batch, T, vocab)."""
        hidden, _ = self.hidden_states(ids, attention_mask, cache)
        return self.logits(hidden)

    def loss(self, inputs: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy of ``targets`` (batch, T) (``IGNORE_INDEX`` skipped), label smoothing
        ``config.label_smoothing``; ``mean`` or ``sum`` over tokens."""
        logits = self(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.config.label_smoothing, reduction=reduction)

    def new_cache(self, capacity: int) -> RecurrentState:
        """An empty state (zeros on the first call); ``capacity`` does not bound it: the state has
        one size whatever the length."""
        return RecurrentState(None)

    def set_attention_kernel(self, kernel: AttentionKernel) -> None:
        """Nothing attends here: no kernel to switch."""

    def parameter_parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        return {"embeddings": [self.embedding], "recurrent": [self.recurrent],
                "output_projection": [self.output_projection]}

