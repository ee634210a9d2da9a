"""Search over an autoregressive model's distributions: greedy search and beam search.

Both drive a :class:`~transformerkit.generation.decoders.StepDecoder` (a model with its key/value
cache); greedy search is :func:`~transformerkit.generation.sampling.generate_tokens` without
sampling, the same loop that samples from language models.

Beam search scores a finished hypothesis Y by log P(Y|X) / lp(Y) with Google NMT's length
penalty lp(Y) = ((5 + |Y|) / 6)^α (Wu et al., 2016; the paper uses α = 0.6, §6.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.decoders import Seq2SeqDecoder, Seq2SeqModel, StepDecoder
from transformerkit.generation.interrupt import check_interrupt
from transformerkit.generation.sampling import TokenChooser, generate_tokens


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + |Y|) / 6)^α."""
    return ((5 + length) / 6) ** alpha


def max_target_lengths(src: Tensor, pad_id: int, offset: int, cap: int | None = None) -> list[int]:
    """Per sentence: source length (without padding) + ``offset`` target tokens, EOS included, at most ``cap``."""
    return [int(min(int(n) + offset, cap or math.inf)) for n in (src != pad_id).sum(dim=1).tolist()]


@torch.no_grad()
def greedy_decode(model: Seq2SeqModel, src: Tensor, max_length_offset: int,
                  max_length: int | None = None) -> Tensor:
    """The most probable next token at every step, with a key/value cache.

    src: (batch, src_len) → (batch, ≤ max_len) target ids without BOS, where each sentence may
    produce its source length + ``max_length_offset`` tokens (at most ``max_length``); rows that
    ended early are padded.
    """
    cfg = model.config
    limits = torch.tensor(max_target_lengths(src, cfg.pad_id, max_length_offset, max_length), device=src.device)
    decoder = Seq2SeqDecoder(model, src, copies=1, capacity=int(limits.max()))
    bos = torch.full((src.shape[0], 1), cfg.bos_id, dtype=torch.long, device=src.device)
    steps = generate_tokens(decoder, bos, limits, TokenChooser(GenerationConfig(do_sample=False)),
                            cfg.eos_id, cfg.pad_id)
    return torch.stack(list(steps), dim=1)


@dataclass
class Hypothesis:
    tokens: list[int]
    """Generated ids without BOS and EOS."""
    score: float
    """log P(tokens + EOS | source) / length penalty."""


@torch.no_grad()
def beam_search(decoder: StepDecoder, max_lengths: list[int], beam: int, bos_id: int, eos_id: int,
                alpha: float = 0.6, device: torch.device | str = "cpu") -> list[Hypothesis]:
    """Batched beam search; the best finished hypothesis of each sentence.

    ``decoder`` holds ``len(max_lengths) · beam`` rows, sentence-major. ``max_lengths[i]`` caps the
    tokens sentence i may generate, EOS included (at the cap EOS is forced). A sentence is done
    when ``beam`` hypotheses have ended with EOS among the top-``beam`` candidates of a step (as
    fairseq does); done sentences leave the batch, so a sentence's result never depends on the
    others in its batch.
    """
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    batch = len(max_lengths)
    active = list(range(batch))  # original index of each active sentence
    limits = torch.tensor(max_lengths, device=device)
    tokens = torch.full((batch * beam, 1), bos_id, dtype=torch.long, device=device)
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while active:
        check_interrupt()  # a stop from outside (the server's deadlines): DecodingInterrupted
        n = len(active)
        log_probs = decoder.step(tokens[:, -1:]).log_softmax(dim=-1).view(n, beam, -1)
        vocab = log_probs.shape[-1]
        at_limit = limits == step + 1
        if at_limit.any():  # only EOS may follow (kept finite even where the model gives it p = 0)
            only_eos = torch.full_like(log_probs[0, 0], float("-inf"))
            only_eos[eos_id] = 0.0
            log_probs[at_limit] = log_probs[at_limit].clamp(min=-1e9) + only_eos
        candidates = (scores[:, :, None] + log_probs).view(n, beam * vocab)
        top_scores, top_index = candidates.topk(min(2 * beam, beam * vocab), dim=1)
        from_beam, token = top_index // vocab, top_index % vocab
        is_eos = token == eos_id

        # hypotheses that end here, if they rank among the top `beam` candidates
        penalty = length_penalty(step + 1, alpha)
        ending = (is_eos[:, :beam] & top_scores[:, :beam].isfinite()).nonzero().tolist()
        history = tokens.view(n, beam, -1)
        for a, k in ending:
            sentence = finished[active[a]]
            if len(sentence) < beam:
                sentence.append(Hypothesis(history[a, from_beam[a, k], 1:].tolist(), top_scores[a, k].item() / penalty))

        # the best `beam` candidates that go on (at most `beam` of the 2·beam end in EOS)
        rank = torch.arange(top_index.shape[1], device=device).expand_as(top_index)
        keep = (is_eos.long() * top_index.shape[1] + rank).argsort(dim=1)[:, :beam]
        next_beam, next_token = from_beam.gather(1, keep), token.gather(1, keep)
        scores = top_scores.gather(1, keep)
        rows = (torch.arange(n, device=device)[:, None] * beam + next_beam).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), next_token.view(-1, 1)], dim=1)

        going_on = [a for a, s in enumerate(active) if len(finished[s]) < beam and not at_limit[a]]
        if not going_on:
            break
        if len(going_on) < n:
            kept = torch.tensor(going_on, dtype=torch.long, device=device)
            rows = rows.view(n, beam).index_select(0, kept).view(-1)
            tokens = tokens.view(n, beam, -1).index_select(0, kept).view(len(going_on) * beam, -1)
            scores, limits = scores.index_select(0, kept), limits.index_select(0, kept)
            active = [active[a] for a in going_on]
        decoder.select(rows)
        step += 1
    return [max(hyps, key=lambda h: h.score) for hyps in finished]


def translate_ids(model: Seq2SeqModel, src: Tensor, beam: int = 4, alpha: float = 0.6,
                  max_length_offset: int = 50, max_length: int | None = None) -> list[Hypothesis]:
    """Beam search for a padded batch of source ids (batch, src_len); max length = source + offset
    (at most ``max_length``)."""
    cfg = model.config
    limits = max_target_lengths(src, cfg.pad_id, max_length_offset, max_length)
    decoder = Seq2SeqDecoder(model, src, copies=beam, capacity=max(limits))
    return beam_search(decoder, limits, beam, cfg.bos_id, cfg.eos_id, alpha, device=src.device)
