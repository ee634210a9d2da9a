"""The attention kernels, registered by name in :data:`ATTENTION_KERNELS`, and the one function
that runs the named one (:func:`attend`), as torchtune's ``attention_utils`` and Hugging Face's
``ALL_ATTENTION_FUNCTIONS`` keep that choice in one place. A model's ``attention_kernel`` names
its kernel; adding one is a function of :data:`KernelFunction`'s signature and one
:func:`register_attention_kernel` call.

Two kernels compute softmax(Q Kᵀ / √d_k) V (§3.2.1, eq. 1) with the same inputs:

* ``reference``: the formula written out; it returns the attention weights (for plots).
* ``fused``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
  kernels where the device has them).

``auto`` (every model's default) takes the formula where it is measured faster on this machine
(:func:`formula_is_faster`: bf16 training), else ``fused``, computed in fp32 where that is
measured faster (:func:`fp32_is_faster`: bf16 inference). ``fused`` and ``reference`` are PyTorch's kernel and the formula as
they are, whatever the device (``fused`` is what plain PyTorch runs). A caller that needs the
weights (``need_weights``) gets the formula whatever the kernel: only it computes them.

Shapes: q (batch, heads, q_len, d_k), k (batch, heads, k_len, d_k), v (batch, heads, k_len, d_v);
masks bool, broadcastable to (batch, heads, q_len, k_len), ``True`` = may attend. A query row
whose keys are all masked out returns zeros.

Grouped rows (:func:`attend`): q may have g times the rows of k and v (a sentence's g beams over
its one row of encoder output). Each group of g consecutive rows of q then attends over one row
of k and v, read once: the group's queries are stacked as g · q_len queries of that row,
(rows·g, heads, q_len, d) → (rows, heads, g·q_len, d), and unstacked after. The mask of grouped
rows is per key (batch of k, 1, 1, k_len), as padding is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.backends.calibration import ATTENTION_OVERRIDE, choose_bf16_attention_upcast, choose_faster
from transformerkit.config import AttentionKernel
from transformerkit.nn.dropout import dropout
from transformerkit.nn.masks import causal_mask, merge_masks

KernelFunction = Callable[[Tensor, Tensor, Tensor, "Tensor | None", bool, float], "tuple[Tensor, Tensor | None]"]
"""(q, k, v, mask, causal, dropout_p) → (output (batch, heads, q_len, d_v), the weights
(batch, heads, q_len, k_len) or None): an attention kernel, for q, k, v with the same rows."""


def _guard_empty_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Let fully masked query rows attend everywhere (finite softmax, finite gradients) and return
    which rows had at least one key, so their output can be zeroed afterwards.

    mask: (..., q, k) → (mask', has_key: (..., q, 1))
    """
    has_key = mask.any(dim=-1, keepdim=True)
    return mask | ~has_key, has_key


def reference_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                        dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / √d_k) V, written from the formula.

    q: (batch, heads, q_len, d_k), k: (batch, heads, k_len, d_k), v: (batch, heads, k_len, d_v),
    mask: bool broadcastable to (batch, heads, q_len, k_len)
    → output (batch, heads, q_len, d_v), weights (batch, heads, q_len, k_len).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    has_key = None
    if mask is not None:
        mask, has_key = _guard_empty_rows(mask)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    if has_key is not None:
        weights = weights * has_key
    output = dropout(weights, dropout_p) @ v if dropout_p > 0 else weights @ v
    return output, weights


def formula_is_faster(q: Tensor) -> bool:
    """Where ``auto`` computes the formula: bf16 training on a CPU where the formula's forward and
    backward measure faster than PyTorch's fused kernel's — the first time a (heads, length
    rounded up to a power of two, head width) class is seen in the process
    (:func:`_formula_measured_faster`, kept per machine in the speed-choice cache). On the AMD
    EPYC the fused CPU kernel spent most of a bf16 step in its backward while the formula runs on
    bf16 matrix products (BENCHMARKS.md). ``transformerkit train`` times both on the model's whole
    step instead and sets the kernel (:mod:`transformerkit.training.speed_measures`)."""
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled()
            and _formula_measured_faster(q.shape[1], max(16, 1 << (q.shape[2] - 1).bit_length()), q.shape[-1]))


@functools.cache
def _formula_measured_faster(heads: int, length: int, head_dim: int) -> bool:
    """Forward and backward of self-attention over 8 rows × ``heads`` × ``length`` × ``head_dim``
    in bf16, the formula against the fused kernel (:func:`~transformerkit.backends.calibration.choose_faster`)."""
    numbers = torch.Generator().manual_seed(0)  # its own: training's random stream stays as it was
    q, k, v = (torch.randn(8, heads, length, head_dim, generator=numbers).to(torch.bfloat16).requires_grad_()
               for _ in range(3))

    def forward_backward(kernel: KernelFunction) -> Callable[[], None]:
        def run() -> None:
            with torch.enable_grad(), torch.autocast("cpu", enabled=False):
                kernel(q, k, v, None, False, 0.0)[0].sum().backward()
        return run
    shape = f"bf16 forward+backward, 8 rows × {heads} heads × {length} positions × {head_dim}"
    return choose_faster("attention formula", shape, forward_backward(_fused_kernel),
                         forward_backward(_reference_kernel), ("fused kernel", "formula"), ATTENTION_OVERRIDE).use


def fp32_is_faster(q: Tensor) -> bool:
    """Where ``auto`` runs :func:`fused_attention` in fp32: bf16 inference on a CPU (not under
    autocast, which runs PyTorch's fused kernel in bf16 whatever its inputs), where a measurement
    finds the fp32 kernel faster than the bf16 one — the first time a (heads, head width) class is
    seen in the process (:func:`~transformerkit.backends.calibration.choose_bf16_attention_upcast`:
    about 0.3 s, kept per machine in the speed-choice cache). On an AMD EPYC it was (BENCHMARKS.md);
    on an Intel Xeon with AMX the bf16 kernel is 4× faster. The casts move 6 bytes per element of
    q, k, v."""
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and _upcast_measured_faster(q.shape[1], q.shape[-1]))


@functools.cache
def _upcast_measured_faster(heads: int, head_dim: int) -> bool:
    return choose_bf16_attention_upcast(heads, head_dim).use


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False,
                    dropout_p: float = 0.0) -> Tensor:
    """The same function through ``F.scaled_dot_product_attention``; shapes as :func:`reference_attention`.

    ``causal=True`` with no other mask and q_len == k_len takes SDPA's ``is_causal`` fast path; a
    single query (one decoding step) is the newest position, so the causal mask allows every key.
    """
    if causal and q.shape[2] == 1:
        causal = False
    if causal and mask is None and q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if causal:
        mask = merge_masks(mask, causal_mask(q.shape[2], k.shape[2], q.device))
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask, has_key = _guard_empty_rows(mask)
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return output * has_key


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, dropout_p: float,
           kernel: AttentionKernel, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """Attention output (batch, heads, q_len, d_v) on the kernel that ``kernel`` names, and the
    weights (batch, heads, q_len, k_len) when the formula computed them at the caller's wish
    (``need_weights``, or ``kernel="reference"``), else None.
    ``causal`` also forbids keys after the query's position (self-attention). q's batch may be a
    multiple g of k's: grouped rows (module docstring)."""
    group = q.shape[0] // k.shape[0]
    if q.shape[0] != group * k.shape[0]:
        raise ValueError(f"{q.shape[0]} query rows cannot share {k.shape[0]} key rows in equal groups")
    if group > 1:
        out, weights = _attend(_stack_groups(q, group), k, v, mask, causal, dropout_p, kernel, need_weights)
        return _unstack_groups(out, group), None if weights is None else _unstack_groups(weights, group)
    return _attend(q, k, v, mask, causal, dropout_p, kernel, need_weights)


def _reference_kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
                      dropout_p: float) -> tuple[Tensor, Tensor | None]:
    if causal:
        mask = merge_masks(mask, causal_mask(q.shape[2], k.shape[2], q.device))
    return reference_attention(q, k, v, mask, dropout_p)


def _fused_kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
                  dropout_p: float) -> tuple[Tensor, Tensor | None]:
    return fused_attention(q, k, v, mask, causal, dropout_p), None


def _auto_kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
                 dropout_p: float) -> tuple[Tensor, Tensor | None]:
    """The formula where it was measured faster, else the fused kernel (in fp32 where that was)."""
    if formula_is_faster(q):
        return _reference_kernel(q, k, v, mask, causal, dropout_p)[0], None
    if fp32_is_faster(q):
        return fused_attention(q.float(), k.float(), v.float(), mask, causal, dropout_p).to(q.dtype), None
    return _fused_kernel(q, k, v, mask, causal, dropout_p)


ATTENTION_KERNELS: dict[str, KernelFunction] = {}
"""Kernel name (a model's ``attention_kernel``) → its function."""


def register_attention_kernel(name: str, kernel: KernelFunction) -> None:
    """Make ``kernel`` available to every model as ``attention_kernel: name``."""
    ATTENTION_KERNELS[name] = kernel


register_attention_kernel("auto", _auto_kernel)
register_attention_kernel("fused", _fused_kernel)
register_attention_kernel("reference", _reference_kernel)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, dropout_p: float,
            kernel: AttentionKernel, need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`attend` for q, k, v with the same rows."""
    return ATTENTION_KERNELS["reference" if need_weights else kernel](q, k, v, mask, causal, dropout_p)


def _stack_groups(x: Tensor, group: int) -> Tensor:
    """(rows·group, heads, q_len, width) → (rows, heads, group·q_len, width): a group's queries side by side."""
    batch, heads, q_len, width = x.shape
    return x.view(batch // group, group, heads, q_len, width).transpose(1, 2).reshape(
        batch // group, heads, group * q_len, width)


def _unstack_groups(x: Tensor, group: int) -> Tensor:
    """Inverse of :func:`_stack_groups`: (rows, heads, group·q_len, width) → (rows·group, heads, q_len, width)."""
    rows, heads, stacked, width = x.shape
    return x.view(rows, heads, group, stacked // group, width).transpose(1, 2).reshape(
        rows * group, heads, stacked // group, width)
