"""Decoding for the encoder-decoder: greedy search with a key/value cache."""

from __future__ import annotations

import torch
from torch import Tensor

from transformerkit.models.encoder_decoder import EncoderDecoderTransformer


@torch.no_grad()
def greedy_decode(model: EncoderDecoderTransformer, src: Tensor, max_len: int) -> Tensor:
    """Greedy decoding with a key/value cache.

    src: (batch, src_len) → (batch, ≤ max_len) target ids without BOS; rows that ended early are
    padded after their EOS.
    """
    cfg = model.config
    src_mask = model.source_mask(src)
    memory, _ = model.encode(src, src_mask)
    batch = src.shape[0]
    cache = model.new_cache(max_len, memory)
    token = torch.full((batch, 1), cfg.bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    out = []
    for _ in range(max_len):
        hidden, _ = model.decode(token, memory, src_mask, cache=cache)
        token = model.logits(hidden[:, -1:]).argmax(-1)
        token = token.masked_fill(finished[:, None], cfg.pad_id)
        out.append(token)
        finished |= token[:, 0] == cfg.eos_id
        if finished.all():
            break
    return torch.cat(out, dim=1)
