"""The pointer-generator output (See et al., 2017, "Get To The Point", §2.2): copy from the source or generate.

A summary reuses the document's words; a decoder that must produce each of them from the
vocabulary learns that slowly. The pointer-generator lets each decoder state h_t mix
generating with copying a source token:

    a_t   = softmax(q(h_t) · m_i / √d_model)   over source positions i (pads masked)   (batch, tgt, src)
    p_gen = σ(w · h_t + b)                                                              (batch, tgt, 1)
    P(w)  = p_gen · softmax(h_t Eᵀ)_w + (1 − p_gen) · Σ_{i: src_i = w} a_t,i             (batch, tgt, vocab)

m: the encoder's output; E: the pre-softmax projection (§3.4). The copy distribution a_t is one
attention head of its own (the paper reuses its single-head decoder attention; a Transformer's
cross-attention has many heads in every layer). One joint BPE vocabulary holds every source
token, so no vocabulary extended by source words is needed.

The output is log P: normalized, so softmax, log_softmax and cross-entropy read it as logits and
give P back — the loss (label smoothing included), greedy and beam search need no change. Past
the two projections it is computed in fp32 (outside autocast): a sum of two distributions must
not round to zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn



class PointerGenerator(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_model)
        """q: the decoder state's query over the encoder's output."""
        self.gate = nn.Linear(d_model, 1)
        """w, b of p_gen."""

    def forward(self, hidden: Tensor, logits: Tensor, memory: Tensor, memory_mask: Tensor, src: Tensor) -> Tensor:
        """
        hidden (rows, tgt, d_model) decoder states and logits (rows, tgt, vocab) their h Eᵀ;
        memory (groups, src_len, d_model), memory_mask (groups, 1, 1, src_len) bool (True: a real token),
        src (groups, src_len) source ids, where rows = groups · g: g consecutive rows (beams) share a
        source row, as in grouped cross-attention → log P (rows, tgt, vocab), fp32.
        """
        rows, tgt_len, d_model = hidden.shape
        groups = memory.shape[0]
        if rows % groups:
            raise ValueError(f"{rows} decoder rows cannot share {groups} source rows in equal groups")
        query = self.query(hidden).float().view(groups, rows // groups * tgt_len, d_model)
        p_gen = torch.sigmoid(self.gate(hidden).float())                                 # (rows, tgt, 1)
        with torch.autocast(hidden.device.type, enabled=False):  # the projections above run as the model's others
            scores = query @ memory.float().transpose(1, 2) / math.sqrt(d_model)       # (groups, g·tgt, src)
            scores = scores.masked_fill(~memory_mask[:, 0], torch.finfo(scores.dtype).min)
            copy = torch.zeros(*scores.shape[:2], logits.shape[-1], device=scores.device)
            copy.scatter_add_(-1, src[:, None, :].expand_as(scores), scores.softmax(-1))  # Σ over equal ids
            probabilities = p_gen * logits.float().softmax(-1) + (1 - p_gen) * copy.view_as(logits)
            return probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()
