"""Choosing the next token: greedy or sampled, with Hugging Face's logits processors.

Applied to the logits z (rows, vocab) in this order (as ``transformers`` does):

    repetition penalty (CTRL):  z_i ← z_i / θ if z_i > 0 else z_i · θ,  for tokens i already seen
    temperature:                z ← z / T
    top-k:                      keep the k largest z, the rest → −∞
    top-p (nucleus):            keep the smallest most-probable set with Σ softmax(z) ≥ p

then the token is argmax z (greedy) or drawn from softmax(z) (sampling, with a seeded generator).
Greedy search ignores temperature, top-k and top-p, as in ``transformers``.

:func:`generate_tokens` is the one decoding loop for greedy search and sampling, for every
model family: it drives a :class:`~transformerkit.generation.decoders.StepDecoder` and yields each
step's tokens, so callers can stream them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.decoders import StepDecoder
from transformerkit.generation.interrupt import check_interrupt


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """logits (rows, vocab), seen (rows, vocab) bool → logits with seen tokens made less likely."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row (ties at the k-th value are kept); 0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the most probable tokens whose cumulative probability first reaches ``p`` (at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= p  # mass before this token already ≥ p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class TokenChooser:
    """Picks each row's next token from its logits under a :class:`GenerationConfig`."""

    def __init__(self, config: GenerationConfig, device: torch.device | str = "cpu") -> None:
        config.validate()
        self.config = config
        self.generator: torch.Generator | None = None
        if config.do_sample:
            self.generator = torch.Generator(device=device)
            if config.seed is not None:
                self.generator.manual_seed(config.seed)
            else:
                self.generator.seed()

    def __call__(self, logits: Tensor, seen: Tensor | None = None) -> Tensor:
        """logits (rows, vocab), seen (rows, vocab) bool or None → tokens (rows,)."""
        c = self.config
        if seen is not None:
            logits = apply_repetition_penalty(logits, seen, c.repetition_penalty)
        if not c.do_sample:
            return logits.argmax(dim=-1)
        logits = top_p_filter(top_k_filter(logits / c.temperature, c.top_k), c.top_p)
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=self.generator)[:, 0]


@torch.no_grad()
def generate_tokens(decoder: StepDecoder, first: Tensor, max_new_tokens: int | Tensor, choose: TokenChooser,
                    eos_id: int | None, pad_id: int, seen: Tensor | None = None,
                    stopped: Callable[[Tensor], Tensor] | None = None) -> Iterator[Tensor]:
    """Yield the next token of every row, (rows,), step by step.

    first: (rows, n) what the first step feeds (a BOS column, or the prompts).
    max_new_tokens: a limit for all rows or per row (rows,).
    seen: (rows, vocab) bool, tokens seen so far (for the repetition penalty; updated in place).
    stopped: called with each step's tokens, returns (rows,) bool for rows to end now (stop strings).
    A row ends at EOS (yielded), at its limit, or when ``stopped``; after that it yields ``pad_id``.
    The loop ends when every row has ended, or with :class:`~transformerkit.generation.interrupt.DecodingInterrupted`
    when its thread's stop condition becomes true (:func:`~transformerkit.generation.interrupt.interruptible`).
    """
    rows = first.shape[0]
    limits = torch.as_tensor(max_new_tokens, device=first.device).expand(rows)
    finished = limits <= 0
    tokens, step = first, 0
    while not finished.all():
        check_interrupt()
        token = choose(decoder.step(tokens), seen).masked_fill(finished, pad_id)
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        step += 1
        yield token
        if eos_id is not None:
            finished |= token == eos_id
        finished |= limits <= step
        if stopped is not None:
            finished |= stopped(token)
        tokens = token[:, None]
