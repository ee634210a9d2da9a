"""Attention masks.

Convention (the same as ``torch.nn.functional.scaled_dot_product_attention``'s boolean masks):
a mask is a boolean tensor broadcastable to ``(batch, heads, query_len, key_len)`` in which
``True`` means "this query may attend to this key". ``None`` means no masking.
"""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """Key-padding mask from token ids.

    ids: (batch, seq) → mask: (batch, 1, 1, seq), False at padding positions.
    """
    return (ids != pad_id)[:, None, None, :]


def causal_mask(query_len: int, key_len: int, device: torch.device | None = None) -> Tensor:
    """Causal mask aligned to the end of the keys (§3.2.3: "prevent leftward information flow").

    Query i is the token at absolute position ``key_len - query_len + i``; it may attend to keys
    at positions ≤ its own. With a key/value cache ``key_len`` counts the cached keys too.

    → mask: (1, 1, query_len, key_len).
    """
    offset = key_len - query_len
    query_pos = torch.arange(query_len, device=device)[:, None] + offset
    key_pos = torch.arange(key_len, device=device)[None, :]
    return (key_pos <= query_pos)[None, None]


def merge_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the given masks (broadcast); ``None`` entries are ignored."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    merged = present[0]
    for mask in present[1:]:
        merged = merged & mask
    return merged
