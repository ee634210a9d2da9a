"""The linear map y = x Wᵀ + b on oneDNN's fp32 matrix products (CPU), as an opt-in transform.

Every projection of the Transformer — Q, K, V and output (§3.2.2), the two feed-forward layers
(§3.3) and the pre-softmax projection (§3.4) — is an ``nn.Linear``, so its kernel sets the speed
of training. In fp32 on a CPU, ``F.linear`` calls MKL's sgemm; oneDNN (PyTorch's other CPU
library, already used for bf16) runs the same product with its own kernels. Which is faster
depends on the processor (MKL takes an AVX2 path on AMD's; on Intel's they are close or MKL
wins: BENCHMARKS.md), so :func:`use_onednn_products` is applied only where
:mod:`.calibration` measured it faster.

:func:`onednn_linear` routes fp32 CPU products through ``torch.ops.mkldnn._linear_pointwise``
(the op PyTorch's own compiler emits for CPU linears) with the three products of backpropagation
written out (:class:`OneDNNLinearFunction`); everything else — bf16 autocast (already oneDNN),
CUDA, other dtypes — goes to ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available()


def _onednn_matmul(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x Wᵀ + b through oneDNN. x: (..., in), weight: (out, in) with any strides → (..., out)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b with its gradients as oneDNN products.

    With g = ∂L/∂y (rows flattened to (n, out)): ∂L/∂x = g W, ∂L/∂W = gᵀ x, ∂L/∂b = Σ_rows g.
    The transposes are strided views. oneDNN reads a strided weight operand in place but copies a
    strided input operand, so ∂L/∂W is arranged to copy the smaller of gᵀ (n × out) and xᵀ (n × in)
    (for a d_model → vocab projection, xᵀ); the gradient then stays a transposed view until
    autograd accumulates it.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, weight: Tensor,
                bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_matmul(x, weight, bias)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        rows = grad.contiguous().view(-1, grad.shape[-1])                     # (n, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_matmul(rows, weight.t()).view(x.shape)           # g W: (n, in)
        if ctx.needs_input_grad[1]:
            inputs = x.reshape(-1, x.shape[-1])                                   # (n, in)
            if weight.shape[0] > weight.shape[1]:  # out > in: let oneDNN copy xᵀ, the smaller operand
                grad_weight = _onednn_matmul(inputs.t(), rows.t()).t()           # (xᵀ g)ᵀ: (out, in)
            else:
                grad_weight = _onednn_matmul(rows.t(), inputs.t())               # gᵀ x: (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias


def uses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`onednn_linear` takes oneDNN for these operands: fp32 on a CPU, outside autocast,
    with at least one row (oneDNN has no primitive for an empty product: an all-padding batch, whose
    packed tokens are none, goes through ``F.linear`` and gets zero gradients)."""
    return (ONEDNN_AVAILABLE and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and x.numel() > 0)


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b. x: (..., in), weight: (out, in), bias: (out,) → (..., out); oneDNN for fp32 on CPU."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    operands = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        return OneDNNLinearFunction.apply(x, weight, bias)
    return _onednn_matmul(x, weight, bias)  # inference: no autograd node


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and state-dict names) computed by :func:`onednn_linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return onednn_linear(x, self.weight, self.bias)


def use_plain_products(model: nn.Module) -> nn.Module:
    """Undo :func:`use_onednn_products`: every :class:`OneDNNLinear` of ``model`` is ``nn.Linear`` again (in place)."""
    for module in model.modules():
        if type(module) is OneDNNLinear:
            module.__class__ = nn.Linear
    return model


def use_onednn_products(model: nn.Module) -> nn.Module:
    """Compute every ``nn.Linear`` of ``model`` with :func:`onednn_linear` (in place: the modules
    become :class:`OneDNNLinear`, which adds no state, so parameters, optimizer and state dict are
    untouched). Without oneDNN the model is returned unchanged."""
    if ONEDNN_AVAILABLE:
        for module in model.modules():
            if type(module) is nn.Linear:
                module.__class__ = OneDNNLinear
    return model

