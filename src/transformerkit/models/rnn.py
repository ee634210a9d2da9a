"""The recurrent baseline: an LSTM (or GRU) encoder-decoder with global attention, the strongest
translation model before the Transformer (Bahdanau et al., 2015; Luong et al., 2015), built from
PyTorch's own recurrent layers (``nn.LSTM`` / ``nn.GRU``: their fused CPU and cuDNN kernels).

    m_1 … m_S   = W_m [→h_s; ←h_s]                       bidirectional encoder, (batch, S, d)
    s_0         = tanh(W_0 m_1)                            decoder start: the backward pass's summary
    h_t         = LSTM(E y_{t-1} [; h̃_{t-1}], h_{t-1})     (input feeding: h̃_{t-1} is fed back)
    a_t         = softmax_s(h_tᵀ W_a m_s)                  Luong's "general" score (``dot``: h_tᵀ m_s)
    h̃_t         = tanh(W_c [Σ_s a_ts m_s; h_t])            attentional hidden state, (batch, T, d)
    logits_t    = h̃_t Eᵀ                                   tied with the target embedding

Unlike self-attention, position t depends on t − 1 through the recurrent state: an encoder or a
decoder runs S or T sequential steps, and information between two words travels through every
state in between (the paper's Table 1). Without input feeding the decoder runs one ``nn.LSTM``
call over the whole target in training; with it, one call per target token.

The model keeps the encoder-decoder contract that decoding uses
(:class:`transformerkit.generation.decoders.Seq2SeqDecoder`): ``source_mask``, ``encode``,
``decode`` with a cache, ``output``, ``new_cache``; so greedy and beam search, the translator,
the trainer and checkpoints are the Transformer's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from transformerkit.config import AttentionKernel
from transformerkit.models.common import EncoderDecoderModel
from transformerkit.nn.layers import LayerAttention
from transformerkit.nn.masks import padding_mask
from transformerkit.typed_config import check_types, from_mapping


@dataclass
class RNNConfig:
    """The recurrent encoder-decoder's shape (``model.family: rnn`` in a recipe)."""

    cell: Literal["lstm", "gru"] = "lstm"
    d_model: int = 512
    """Embedding and hidden width (each direction of the encoder has d_model / 2)."""
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    attention: Literal["general", "dot"] = "general"
    input_feeding: bool = False
    """Feed h̃_{t−1} into the decoder's next step (Luong et al.): one recurrent call per token."""
    dropout: float = 0.2
    label_smoothing: float = 0.1
    vocab_size: int = 8000
    tgt_vocab_size: int | None = None
    """Target vocabulary size for separate vocabularies; None shares the source vocabulary."""
    tie_embeddings: bool = True
    """The target embedding is the output projection's matrix."""
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    family: ClassVar[str] = "rnn"

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("d_model", "num_encoder_layers", "num_decoder_layers", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even (two encoder directions of d_model / 2), got {self.d_model}")
        for name in ("dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.tgt_vocab_size is not None and self.tgt_vocab_size <= 0:
            raise ValueError(f"tgt_vocab_size must be a positive integer or None, got {self.tgt_vocab_size}")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < min(self.vocab_size, self.target_vocab_size):
                raise ValueError(f"{name} ({getattr(self, name)}) must be a token id below the vocabulary size")

    @property
    def shared_vocab(self) -> bool:
        return self.tgt_vocab_size is None

    @property
    def target_vocab_size(self) -> int:
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RNNConfig:
        return from_mapping(cls, values)

    def replace(self, **changes: Any) -> RNNConfig:
        return self.from_dict({**self.to_dict(), **changes})


State = Tensor | tuple[Tensor, Tensor]
"""A recurrent layer stack's state: (layers, rows, d), a pair (h, c) for an LSTM."""


def map_state(state: State, function: Callable[[Tensor], Tensor]) -> State:
    """``function`` applied to the state's tensor(s)."""
    return (function(state[0]), function(state[1])) if isinstance(state, tuple) else function(state)


@dataclass
class RecurrentState:
    """A recurrent stack's state between decoding steps and how many tokens it has read; None
    before the first (zeros)."""

    state: State | None
    length: int = 0

    def reorder(self, rows: Tensor, memory_rows: Tensor | None = None) -> None:
        """Keep ``rows`` of the state (beam search, finished rows dropped)."""
        if self.state is not None:
            self.state = map_state(self.state, lambda t: t.index_select(1, rows))


@dataclass
class RNNCache(RecurrentState):
    """The decoder's state between steps, with the last attentional state ``feed`` (rows, d) for
    input feeding. Rows may start as one per source sentence and are repeated to the decoder's
    rows (beams) on the first step."""

    feed: Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0))

    def reorder(self, rows: Tensor, memory_rows: Tensor | None = None) -> None:
        """Keep ``rows`` of every per-row state (beam search); memory rows live with the decoder."""
        super().reorder(rows)
        self.feed = self.feed.index_select(0, rows)

    def repeat_rows(self, copies: int) -> None:
        if self.state is not None:
            self.state = map_state(self.state, lambda t: t.repeat_interleave(copies, dim=1))
        self.feed = self.feed.repeat_interleave(copies, dim=0)


class RNNEncoderDecoder(EncoderDecoderModel):
    """Bidirectional recurrent encoder, recurrent decoder with global attention (module docstring).
    It keeps the contract of the encoder-decoders
    (:class:`~transformerkit.models.common.EncoderDecoderModel`: ``forward`` and ``loss`` come from
    there) with nothing that attends to itself.

    src: (batch, S) ids, right-padded; tgt: (batch, T) → logits (batch, T, target vocab).
    """

    model_type = "transformerkit-rnn"
    config_class = RNNConfig  # type: ignore[assignment]
    requires = "a recurrent encoder-decoder"
    config: RNNConfig  # type: ignore[assignment]

    def __init__(self, config: RNNConfig) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        d, cell = config.d_model, {"lstm": nn.LSTM, "gru": nn.GRU}[config.cell]
        between = config.dropout
        self.src_embedding = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_id)
        self.tgt_embedding = (self.src_embedding if config.shared_vocab and config.tie_embeddings
                              else nn.Embedding(config.target_vocab_size, d, padding_idx=config.pad_id))
        self.encoder = cell(d, d // 2, num_layers=config.num_encoder_layers, batch_first=True, bidirectional=True,
                            dropout=between if config.num_encoder_layers > 1 else 0.0)
        self.memory_projection = nn.Linear(d, d, bias=False)     # W_m: the two directions' states → d
        self.bridge = nn.Linear(d, config.num_decoder_layers * d)  # W_0: decoder start state per layer
        self.decoder = cell(2 * d if config.input_feeding else d, d, num_layers=config.num_decoder_layers,
                            batch_first=True, dropout=between if config.num_decoder_layers > 1 else 0.0)
        self.attention_weight = nn.Linear(d, d, bias=False) if config.attention == "general" else None  # W_a
        self.combine = nn.Linear(2 * d, d, bias=False)            # W_c
        self.dropout = nn.Dropout(config.dropout)
        self.output_projection = nn.Linear(d, config.target_vocab_size, bias=False)
        if config.tie_embeddings:
            self.output_projection.weight = self.tgt_embedding.weight

    # ------------------------------------------------------------------------------------ parts
    def source_mask(self, src: Tensor) -> Tensor:
        """Key-padding mask (batch, 1, 1, S), True at real tokens (the Transformer's shape)."""
        return padding_mask(src, self.config.pad_id)

    def encode(self, src: Tensor, src_mask: Tensor | None = None, need_weights: bool = False
               ) -> tuple[Tensor, list[LayerAttention]]:
        """src (batch, S) → memory (batch, S, d): both directions' states per position, projected;
        zeros at padding (packed sequences: padding is never read)."""
        if src_mask is None:
            src_mask = self.source_mask(src)
        lengths = src_mask[:, 0, 0].sum(dim=-1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.dropout(self.src_embedding(src)), lengths, batch_first=True,
                                      enforce_sorted=False)
        states, _ = self.encoder(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=src.shape[1])
        return self.memory_projection(states), []

    def new_cache(self, capacity: int, memory: Tensor) -> RNNCache:
        """The decoder's start: s_0 = tanh(W_0 m_1) per layer (m_1 holds the backward pass over the
        whole sentence, as in Bahdanau et al.), a zero h̃_0. One row per ``memory`` row."""
        rows, d, layers = memory.shape[0], self.config.d_model, self.config.num_decoder_layers
        start = torch.tanh(self.bridge(memory[:, 0])).view(rows, layers, d).transpose(0, 1).contiguous()
        state: State = (start, torch.zeros_like(start)) if self.config.cell == "lstm" else start
        return RNNCache(state, feed=memory.new_zeros(rows, d))

    def decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None, cache: RNNCache | None = None,
               need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]:
        """tgt (rows, T) ids (only the new ones when ``cache`` holds earlier steps), memory
        (groups, S, d) with rows = groups · g (g consecutive rows per source: beams) → h̃ (rows, T, d),
        and with ``need_weights`` the attention over the source as one layer's cross-attention
        with one head, (rows, 1, T, S)."""
        rows, groups = tgt.shape[0], memory.shape[0]
        if cache is None:
            cache = self.new_cache(0, memory)
        if rows != groups:
            memory = memory.repeat_interleave(rows // groups, dim=0)
            memory_mask = memory_mask.repeat_interleave(rows // groups, dim=0) if memory_mask is not None else None
        if cache.feed.shape[0] != rows:
            cache.repeat_rows(rows // cache.feed.shape[0])
        keys = self.attention_weight(memory) if self.attention_weight is not None else memory  # W_a m_s
        visible = memory_mask[:, 0, 0] if memory_mask is not None else None
        embedded = self.dropout(self.tgt_embedding(tgt))
        if self.config.input_feeding:
            outputs, weights = [], []
            for t in range(tgt.shape[1]):  # h̃_{t-1} enters step t: one recurrent call per token
                step, cache.state = self.decoder(torch.cat([embedded[:, t:t + 1], cache.feed[:, None]], -1),
                                                 cache.state)
                attended, weight = self._attend(step, keys, memory, visible)
                cache.feed = attended[:, 0]
                outputs.append(attended)
                weights.append(weight)
            hidden, attention = torch.cat(outputs, 1), torch.cat(weights, 1)
        else:
            states, cache.state = self.decoder(embedded, cache.state)
            hidden, attention = self._attend(states, keys, memory, visible)
        cache.length += tgt.shape[1]
        return hidden, [LayerAttention(None, attention[:, None])] if need_weights else []

    def _attend(self, states: Tensor, keys: Tensor, memory: Tensor, visible: Tensor | None) -> tuple[Tensor, Tensor]:
        """Global attention: h̃ = tanh(W_c [Σ_s a_s m_s; h]), a = softmax(h · keys) over real source positions."""
        scores = states @ keys.transpose(1, 2)  # (rows, T, S)
        if visible is not None:
            scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
        weights = scores.float().softmax(dim=-1).to(states.dtype)
        context = weights @ memory
        return self.dropout(torch.tanh(self.combine(torch.cat([context, states], dim=-1)))), weights

    def logits(self, hidden: Tensor) -> Tensor:
        return self.output_projection(hidden)

    def output(self, hidden: Tensor, memory: Tensor, memory_mask: Tensor, src: Tensor) -> Tensor:
        """What the decoder states predict: logits (rows, T, target vocab)."""
        return self.logits(hidden)

    @property
    def cross_attention_shape(self) -> tuple[int, int]:
        """One attention over the encoder states, after the last decoder layer: (1 layer, 1 head)."""
        return 1, 1

    def set_attention_kernel(self, kernel: AttentionKernel) -> None:
        """Nothing attends to itself here: no kernel to switch."""

    def parameter_parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        attention = [self.attention_weight] if self.attention_weight is not None else []
        return {"embeddings": [self.src_embedding, self.tgt_embedding],
                "encoder": [self.encoder, self.memory_projection],
                "decoder": [self.bridge, self.decoder, *attention, self.combine],
                "output_projection": [self.output_projection]}
