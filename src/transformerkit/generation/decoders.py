"""Step decoders: a model with its key/value cache, advanced one step at a time.

Greedy search, sampling and beam search all drive a :class:`StepDecoder`: given the newest
token(s) of every row it returns the next-token logits and can keep a subset of its rows (beam
search re-ranks and drops rows). One search implementation thus serves every model family.

* :class:`Seq2SeqDecoder`: an encoder-decoder (any :class:`Seq2SeqModel`). The source is encoded once; the encoder
  output's keys/values are projected once (cross-attention cache); each step feeds one token.
* :class:`CausalLMDecoder`: a language model (any :class:`CausalLanguageModel`). The first step feeds the (left-padded)
  prompts at once (prefill); later steps feed one token and extend the attention mask.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from transformerkit.nn.layers import LayerAttention


class StepDecoder(Protocol):
    def step(self, tokens: Tensor) -> Tensor:
        """tokens: (rows, new) newest tokens per row → next-token logits (rows, vocab), fp32."""

    def select(self, rows: Tensor) -> None:
        """Keep only ``rows`` (new_rows,), in that order, of every per-row state."""


@runtime_checkable
class Seq2SeqModel(Protocol):
    """What decoding needs of an encoder-decoder of any family (the Transformer's
    :class:`~transformerkit.models.encoder_decoder.EncoderDecoderTransformer`, the recurrent
    :class:`~transformerkit.models.rnn.RNNEncoderDecoder`): ``config`` has ``pad_id``, ``bos_id``,
    ``eos_id``; ``new_cache`` returns a state with ``reorder(rows, memory_rows=None)``."""

    config: Any

    def source_mask(self, src: Tensor) -> Tensor: ...

    def encode(self, src: Tensor, src_mask: Tensor | None = None, need_weights: bool = False
               ) -> tuple[Tensor, list[LayerAttention]]: ...

    def new_cache(self, capacity: int, memory: Tensor) -> Any: ...

    def decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None, cache: Any = None,
               need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]: ...

    def output(self, hidden: Tensor, memory: Tensor, memory_mask: Tensor, src: Tensor) -> Tensor: ...


@runtime_checkable
class CausalLanguageModel(Protocol):
    """What decoding needs of a language model of any family (the decoder-only Transformer
    :class:`~transformerkit.models.decoder_only.DecoderOnlyTransformer`, the recurrent
    :class:`~transformerkit.models.rnn_language_model.RNNLanguageModel`): ``new_cache`` returns a
    state with ``length`` and ``reorder(rows)``, which ``hidden_states`` advances."""

    config: Any

    def new_cache(self, capacity: int) -> Any: ...

    def hidden_states(self, ids: Tensor, attention_mask: Tensor | None = None, cache: Any = None,
                      need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]: ...

    def logits(self, hidden: Tensor) -> Tensor: ...


class Seq2SeqDecoder:
    """The encoder-decoder as a :class:`StepDecoder`: ``copies`` rows (beams) per source sentence.

    The source is encoded once and its memory, mask and cross-attention keys/values stay one row
    per sentence: each sentence's ``copies`` consecutive rows attend over that one row (grouped
    cross-attention, :func:`~transformerkit.nn.attention_kernels.attend`), so beams neither
    copy nor re-read it. :meth:`select` must keep rows in whole groups of ``copies`` per sentence.
    """

    def __init__(self, model: Seq2SeqModel, src: Tensor, copies: int, capacity: int) -> None:
        self.model = model
        self.copies = copies
        self.src = src
        self.src_mask = model.source_mask(src)
        self.memory, _ = model.encode(src, self.src_mask)
        self.cache = model.new_cache(capacity, self.memory)
        self.memory_sources = torch.arange(src.shape[0], device=src.device)  # source sentence of each memory row
        self.source_of_row = self.memory_sources.repeat_interleave(copies)

    def step(self, tokens: Tensor) -> Tensor:
        hidden, _ = self.model.decode(tokens, self.memory, self.src_mask, cache=self.cache)
        return self.model.output(hidden[:, -1:], self.memory, self.src_mask, self.src)[:, 0].float()

    def select(self, rows: Tensor) -> None:
        sources = self.source_of_row.index_select(0, rows)
        if torch.equal(sources, self.source_of_row):  # beams re-ranked within their sentences
            self.cache.reorder(rows)
            return
        groups = sources.view(-1, self.copies) if sources.numel() % self.copies == 0 else None
        if groups is None or not bool((groups == groups[:, :1]).all()):
            raise ValueError(f"Seq2SeqDecoder keeps rows in groups of {self.copies} per source sentence")
        memory_rows = (self.memory_sources[None, :] == groups[:, :1]).int().argmax(dim=1)
        self.memory = self.memory.index_select(0, memory_rows)
        self.src_mask = self.src_mask.index_select(0, memory_rows)
        self.src = self.src.index_select(0, memory_rows)
        self.memory_sources, self.source_of_row = groups[:, 0], sources
        self.cache.reorder(rows, memory_rows)


class CausalLMDecoder:
    """A language model as a :class:`StepDecoder` over left-padded prompts.

    prompt_mask: (rows, prompt_len) bool, True at real prompt tokens; ``capacity`` bounds
    prompt + generated positions. The first :meth:`step` must be given the prompts themselves.
    ``use_cache=False`` recomputes the whole sequence every step (the slow baseline the cache
    is measured against; same results).
    """

    def __init__(self, model: CausalLanguageModel, prompt_mask: Tensor, capacity: int,
                 use_cache: bool = True) -> None:
        self.model = model
        self.mask = prompt_mask.bool()
        self.padded = not bool(self.mask.all())  # without padding, positions follow the cache and no mask is needed
        self.cache = model.new_cache(capacity) if use_cache else None
        self.tokens: Tensor | None = None  # everything fed so far (only without a cache)

    def step(self, tokens: Tensor) -> Tensor:
        started = self.tokens is not None or (self.cache is not None and self.cache.length > 0)
        if started:  # after the prompt, every new token is real
            self.mask = torch.cat([self.mask, self.mask.new_ones(tokens.shape)], dim=1)
        elif tokens.shape != self.mask.shape:
            raise ValueError(f"the first step takes the prompts {tuple(self.mask.shape)}, got {tuple(tokens.shape)}")
        if self.cache is None:
            self.tokens = tokens if self.tokens is None else torch.cat([self.tokens, tokens], dim=1)
            tokens = self.tokens
        hidden, _ = self.model.hidden_states(tokens, self.mask if self.padded else None, cache=self.cache)
        return self.model.logits(hidden[:, -1]).float()

    def select(self, rows: Tensor) -> None:
        self.mask = self.mask.index_select(0, rows)
        if self.cache is not None:
            self.cache.reorder(rows)
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, rows)


class VocabularyPrefix:
    """A :class:`StepDecoder` whose next token is one of the first ``size`` ids only: the logits of
    the others are dropped (an image model's grey levels, never its class tokens)."""

    def __init__(self, decoder: StepDecoder, size: int) -> None:
        self.decoder = decoder
        self.size = size

    def step(self, tokens: Tensor) -> Tensor:
        return self.decoder.step(tokens)[:, :self.size]

    def select(self, rows: Tensor) -> None:
        self.decoder.select(rows)
