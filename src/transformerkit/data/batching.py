"""Batches by token count with length bucketing (like fairseq's ``--max-tokens``).

Sequences of similar length go together so little of a batch is padding; a batch holds as many
sequences as fit in its budget of *padded* positions (sequences × longest), a budget every caller
passes explicitly (:func:`batch_by_size`). The order is a pure function of (seed, epoch): a
resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TranslationExample:
    """Token ids of one pair, without special tokens."""

    source: list[int]
    target: list[int]


@dataclass
class TranslationBatch:
    """src: (batch, src_len) ids + EOS, padded; tgt_in: BOS + target; tgt_out: target + EOS."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tokens: int
    """Target tokens (EOS included, padding not): what the loss sums over."""

    def to(self, device: torch.device | str) -> TranslationBatch:
        return TranslationBatch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.tokens)


def padded_length(example: TranslationExample) -> int:
    """Positions one example occupies: the longer side plus its special token."""
    return max(len(example.source), len(example.target)) + 1


def epoch_random(seed: int, epoch: int) -> random.Random:
    """The random numbers of one epoch's order (shuffling, augmentation): a function of the run's
    seed and the epoch alone, so that a resumed run redraws the same epoch."""
    return random.Random(f"{seed}-{epoch}")


def batch_by_size(sizes: list[int], max_tokens: int, seed: int, epoch: int, shuffle: bool = True,
                  max_rows: int | None = None) -> list[list[int]]:
    """Index lists, one per batch, each with ``len(batch) · max(sizes in it) ≤ max_tokens`` padded
    positions and at most ``max_rows`` rows (fairseq's ``batch_by_size``; the caller says what
    a size counts: a pair's longer side, a window's tokens).

    Items are sorted by size (ties in random order), cut greedily into batches, and the batches
    shuffled — all with ``random.Random(seed, epoch)``. Without ``shuffle``, the order is by size,
    for evaluation and decoding. An item larger than ``max_tokens`` gets a batch of its own.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens}")
    if max_rows is not None and max_rows <= 0:
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows}")
    rng = epoch_random(seed, epoch)
    order = list(range(len(sizes)))
    if shuffle:
        rng.shuffle(order)
    order.sort(key=sizes.__getitem__)  # stable: random order within a size
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = sizes[i]
        full = max_rows is not None and len(current) == max_rows
        if current and (full or (len(current) + 1) * max(longest, size) > max_tokens):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def token_batches(examples: list[TranslationExample], max_tokens: int, seed: int, epoch: int,
                  shuffle: bool = True) -> list[list[int]]:
    """:func:`batch_by_size` of translation pairs, each the size of its longer side + its special
    token (:func:`padded_length`)."""
    return batch_by_size([padded_length(e) for e in examples], max_tokens, seed, epoch, shuffle)


def pad(sequences: list[list[int]], pad_id: int) -> Tensor:
    """Right-pad to the longest: → (batch, longest) long tensor."""
    longest = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """:func:`pad` and the mask of real tokens: → (batch, longest) ids, (batch, longest) bool."""
    ids = pad(sequences, pad_id)
    lengths = torch.tensor([len(s) for s in sequences])
    return ids, torch.arange(ids.shape[1])[None, :] < lengths[:, None]


def collate(examples: list[TranslationExample], pad_id: int, bos_id: int, eos_id: int) -> TranslationBatch:
    """Add the special tokens and pad: src + EOS; BOS + tgt (decoder input); tgt + EOS (labels)."""
    return TranslationBatch(
        src=pad([e.source + [eos_id] for e in examples], pad_id),
        tgt_in=pad([[bos_id] + e.target for e in examples], pad_id),
        tgt_out=pad([e.target + [eos_id] for e in examples], pad_id),
        tokens=sum(len(e.target) + 1 for e in examples))


@dataclass
class EncoderBatch:
    """Right-padded encoder inputs (:func:`~transformerkit.data.batching.pad_right`); a task's
    batch adds its targets."""

    ids: Tensor
    """(batch, longest) token ids."""
    mask: Tensor
    """(batch, longest) True at real tokens."""

    @property
    def tokens(self) -> int:
        return len(self.ids)  # the loss sums over sequences
