"""The speed measures of ``transformerkit.backends``: oneDNN products give the same values and
gradients as ``F.linear``, only where they apply; the transform leaves the model's state alone;
the measured choices (oneDNN products, the decoding layout) can be overridden and are kept."""

import copy

import pytest
import torch
import torch.nn.functional as F

from transformerkit.config import preset
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.backends.calibration import (LAYOUT_OVERRIDE, OVERRIDE, choose_decoding_layout,
                                                 choose_onednn_products, use_decoding_layout_where_faster)
from transformerkit.backends.layout import DecodingLinear
from transformerkit.backends.onednn import (ONEDNN_AVAILABLE, OneDNNLinear, onednn_linear, use_onednn_products,
                                            uses_onednn)

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
    y = onednn_linear(x, weight, b)
    grad = torch.randn_like(y)
    expected = F.linear(x, weight, b)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(torch.autograd.grad(y, leaves, grad), torch.autograd.grad(expected, leaves, grad)):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_only_the_needed_gradients_are_computed() -> None:
    x, weight = torch.randn(4, 6, requires_grad=True), torch.randn(3, 6)
    (grad_x,) = torch.autograd.grad(onednn_linear(x, weight).sum(), [x])
    torch.testing.assert_close(grad_x, weight.sum(0).expand(4, 6))  # ∂Σy/∂x = 1ᵀ W


def test_routing_is_fp32_on_cpu_outside_autocast() -> None:
    x, weight = torch.randn(2, 4), torch.randn(3, 4)
    assert uses_onednn(x, weight) == ONEDNN_AVAILABLE
    assert not uses_onednn(x.bfloat16(), weight.bfloat16())
    assert not uses_onednn(x.double(), weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, weight)
        assert onednn_linear(x, weight).dtype == torch.bfloat16  # autocast still applies through F.linear


def test_linear_keeps_nn_linears_parameters_and_state() -> None:
    torch.manual_seed(0)
    ours = OneDNNLinear(4, 3)
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 3)
    assert isinstance(ours, torch.nn.Linear) and ours.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))


@needs_onednn
def test_the_transform_swaps_only_the_linear_maps_and_keeps_every_parameter() -> None:
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50))
    parameters = {name: p for name, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert linears > 0 and use_onednn_products(model) is model
    assert sum(type(m) is OneDNNLinear for m in model.modules()) == linears
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert all(p is parameters[name] for name, p in model.named_parameters())  # the optimizer's tensors
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@needs_onednn
def test_a_training_step_matches_the_mkl_step() -> None:
    """A whole encoder-decoder step (loss and every gradient) agrees with F.linear's to fp32 rounding."""
    config = preset("tiny", vocab_size=50, dropout=0.0)
    torch.manual_seed(0)
    plain = EncoderDecoderTransformer(config)
    model = use_onednn_products(copy.deepcopy(plain))
    src, tgt = torch.randint(3, 50, (4, 9)), torch.randint(3, 50, (4, 8))

    def loss_and_grads(model: EncoderDecoderTransformer) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model.loss(src, tgt[:, :-1], tgt[:, 1:])
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads(model)
    expected_loss, expected_grads = loss_and_grads(plain)
    torch.testing.assert_close(loss, expected_loss, atol=1e-6, rtol=1e-6)
    for ours, theirs in zip(grads, expected_grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@needs_onednn
@pytest.mark.parametrize("wish", ["on", "off"])
def test_the_environment_overrides_the_measurement(monkeypatch: pytest.MonkeyPatch, wish: str) -> None:
    monkeypatch.setenv(OVERRIDE, wish)
    choice = choose_onednn_products(EncoderDecoderTransformer(preset("tiny", vocab_size=50)))
    assert choice.use == (wish == "on") and choice.timings_ms == {} and OVERRIDE in choice.reason


def test_a_wrong_override_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE, "fast")
    with pytest.raises(ValueError, match=f"{OVERRIDE} must be auto, on or off, got 'fast'"):
        choose_onednn_products(EncoderDecoderTransformer(preset("tiny", vocab_size=50)))


@needs_onednn
def test_the_measurement_times_both_kernels_on_the_largest_weight_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE, raising=False)
    config = preset("tiny", vocab_size=50)
    choice = choose_onednn_products(EncoderDecoderTransformer(config), rows=64, rounds=3)
    assert set(choice.timings_ms) == {"F.linear", "oneDNN"} and all(t > 0 for t in choice.timings_ms.values())
    assert f"64×{config.d_model}→{config.d_ff}" in choice.reason
    assert choice.use == (choice.timings_ms["oneDNN"] < 0.95 * choice.timings_ms["F.linear"])


@needs_onednn
def test_a_measured_choice_is_kept_and_shown_by_info(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    import json

    from transformerkit.cli import main
    monkeypatch.delenv(OVERRIDE, raising=False)
    monkeypatch.setenv("TRANSFORMERKIT_CACHE", str(tmp_path))
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50))
    first = choose_onednn_products(model, rows=32, rounds=2)
    again = choose_onednn_products(model, rows=32, rounds=2)
    assert again.use == first.use and again.timings_ms == first.timings_ms and "kept in" in again.reason
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (measure, choice), = report["speed_choices"].items()
    assert measure == "oneDNN products | 32×64→256 forward+backward" and choice["use"] == first.use
    assert report["speed_choices_file"] == str(tmp_path / "speed-choices.json")
    (tmp_path / "speed-choices.json").write_text("not json")  # a damaged cache is measured again
    assert "measured on" in choose_onednn_products(model, rows=32, rounds=2).reason


@needs_onednn
@pytest.mark.parametrize("wish", ["on", "off"])
def test_the_decoding_layout_is_applied_as_the_override_says_and_decodes_alike(monkeypatch: pytest.MonkeyPatch,
                                                                               wish: str) -> None:
    from transformerkit.generation.search import greedy_decode
    monkeypatch.setenv(LAYOUT_OVERRIDE, wish)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50)).eval()
    loaded = copy.deepcopy(model)
    choice = use_decoding_layout_where_faster(loaded)
    assert choice.use == (wish == "on") and LAYOUT_OVERRIDE in choice.reason
    assert any(isinstance(m, DecodingLinear) for m in loaded.modules()) == (wish == "on")
    src = torch.randint(3, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    assert torch.equal(greedy_decode(loaded, src, max_length_offset=5), greedy_decode(model, src, max_length_offset=5))


@needs_onednn
def test_the_decoding_layout_measurement_times_both_and_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv(LAYOUT_OVERRIDE, raising=False)
    monkeypatch.setenv("TRANSFORMERKIT_CACHE", str(tmp_path))
    config = preset("tiny", vocab_size=50)
    model = EncoderDecoderTransformer(config).eval()
    state = torch.get_rng_state()
    first = choose_decoding_layout(model, calls=2, rounds=2)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded sampler after loading draws what it would have
    assert set(first.timings_ms) == {"plain weights", "blocked layout"}
    assert f"1/8 rows×{config.d_model}→{config.d_ff} float32" in first.reason
    assert first.use == (first.timings_ms["blocked layout"] < 0.95 * first.timings_ms["plain weights"])
    again = choose_decoding_layout(model, calls=2, rounds=2)
    assert again.use == first.use and again.timings_ms == first.timings_ms and "kept in" in again.reason
    assert not choose_decoding_layout(model.to(torch.float16)).use  # not a layout for fp16


def test_a_wrong_layout_override_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAYOUT_OVERRIDE, "yes")
    with pytest.raises(ValueError, match=f"{LAYOUT_OVERRIDE} must be auto, on or off, got 'yes'"):
        choose_decoding_layout(EncoderDecoderTransformer(preset("tiny", vocab_size=50)))
