"""The linear map on oneDNN: the same values and gradients as ``F.linear``, routed only where it applies."""

import pytest
import torch
import torch.nn.functional as F

from transformerkit.config import preset
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.nn.linear import ONEDNN_AVAILABLE, Linear, linear, onednn_products, uses_onednn

needs_onednn = pytest.mark.skipif(not ONEDNN_AVAILABLE, reason="this PyTorch build has no oneDNN")


def strided(shape: tuple[int, ...]) -> torch.Tensor:
    """A view whose last dimension has stride 2 (what a slice of a wider tensor gives)."""
    return torch.randn(*shape[:-1], 2 * shape[-1])[..., ::2]


@needs_onednn
@pytest.mark.parametrize("make_input", [torch.randn, strided], ids=["contiguous", "strided"])
@pytest.mark.parametrize("shape", [(5, 16), (3, 7, 16), (2, 3, 4, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_f_linear(make_input, shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    x = make_input(shape).requires_grad_()
    weight = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(8, requires_grad=True) if bias else None
    leaves = [x, weight] + ([b] if bias else [])
    assert uses_onednn(x, weight)
    y = linear(x, weight, b)
    grad = torch.randn_like(y)
    expected = F.linear(x, weight, b)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(torch.autograd.grad(y, leaves, grad), torch.autograd.grad(expected, leaves, grad)):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_only_the_needed_gradients_are_computed() -> None:
    x, weight = torch.randn(4, 6, requires_grad=True), torch.randn(3, 6)
    (grad_x,) = torch.autograd.grad(linear(x, weight).sum(), [x])
    torch.testing.assert_close(grad_x, weight.sum(0).expand(4, 6))  # ∂Σy/∂x = 1ᵀ W


def test_routing_is_fp32_on_cpu_outside_autocast() -> None:
    x, weight = torch.randn(2, 4), torch.randn(3, 4)
    assert uses_onednn(x, weight) == ONEDNN_AVAILABLE
    assert not uses_onednn(x.bfloat16(), weight.bfloat16())
    assert not uses_onednn(x.double(), weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, weight)
        assert linear(x, weight).dtype == torch.bfloat16  # autocast still applies through F.linear
    with onednn_products(False):
        assert not uses_onednn(x, weight)
    assert uses_onednn(x, weight) == ONEDNN_AVAILABLE  # restored on leaving the block


def test_linear_keeps_nn_linears_parameters_and_state() -> None:
    torch.manual_seed(0)
    ours = Linear(4, 3)
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 3)
    assert isinstance(ours, torch.nn.Linear) and ours.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))


@needs_onednn
def test_a_training_step_matches_the_mkl_step() -> None:
    """A whole encoder-decoder step (loss and every gradient) agrees with F.linear's to fp32 rounding."""
    config = preset("tiny", vocab_size=50, dropout=0.0)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(config)
    src, tgt = torch.randint(3, 50, (4, 9)), torch.randint(3, 50, (4, 8))

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model.loss(src, tgt[:, :-1], tgt[:, 1:])
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads()
    with onednn_products(False):
        expected_loss, expected_grads = loss_and_grads()
    torch.testing.assert_close(loss, expected_loss, atol=1e-6, rtol=1e-6)
    for ours, theirs in zip(grads, expected_grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
