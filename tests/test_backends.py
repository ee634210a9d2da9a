"""The speed measures of ``transformerkit.backends``: oneDNN products give the same values and
gradients as ``F.linear``, only where they apply; the transform leaves the model's state alone;
the measured choices (oneDNN products, the decoding layout, the precision, any measure timed on
the model's own step) can be overridden — by environment or ``--speed`` — and are kept; bf16 is chosen only where the CPU has bf16 hardware, and bf16 weights stay plain where
oneDNN cannot lay them out (the ISA detection is monkeypatched to imitate other CPUs)."""

import copy
import os
import time

import pytest
import torch
import torch.nn.functional as F

from transformerkit.backends import machine
from transformerkit.backends.calibration import (INT8_OVERRIDE, LAYOUT_OVERRIDE, OVERRIDE, OVERRIDES, UPCAST_OVERRIDE,
                                                 Choice, DecodingProducts, choose_by_step, choose_decoding_layout,
                                                 choose_inference_dtype, choose_int8_engine, choose_onednn_products,
                                                 choose_precision, quantize_int8_where_fastest,
                                                 use_decoding_layout_where_faster)
from transformerkit.backends.layout import DecodingLinear, use_decoding_layout
from transformerkit.backends.onednn import (ONEDNN_AVAILABLE, OneDNNLinear, onednn_linear, use_onednn_products,
                                            uses_onednn)
from transformerkit.backends.quantization import quantize_linear_int8
from transformerkit.config import preset
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

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
def test_an_all_padding_batch_gets_zero_gradients_as_with_nn_linear() -> None:
    """Its packed tokens are none: oneDNN has no primitive for an empty product ('could not create
    a primitive descriptor' in the backward pass), so such a product goes through F.linear."""
    torch.manual_seed(0)
    model = use_onednn_products(EncoderDecoderTransformer(preset("tiny", vocab_size=50, d_model=32, d_ff=64,
                                                                 num_heads=4)))
    pad = torch.full((2, 5), model.config.pad_id)
    loss = model.loss(pad, pad[:, :4], pad[:, :4], reduction="sum")
    loss.backward()
    assert loss.item() == 0 and all(p.grad is None or not p.grad.any() for p in model.parameters())
    empty = torch.zeros(0, 32, requires_grad=True)
    weight = torch.randn(8, 32, requires_grad=True)
    onednn_linear(empty, weight).sum().backward()
    assert empty.grad is not None and weight.grad is not None and not weight.grad.any()


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
def test_the_models_own_step_is_timed_both_ways_and_the_model_left_on_plain_products(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE, raising=False)
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50))
    src, tgt = torch.randint(3, 50, (4, 7)), torch.randint(3, 50, (4, 8))
    seen: list[bool] = []

    def step() -> None:
        seen.append(any(type(m) is OneDNNLinear for m in model.modules()))
        model.loss(src, tgt[:, :-1], tgt[:, 1:]).backward()
    choice = choose_onednn_products(model, rounds=3, step=step, shape="tiny test step")
    assert seen == [False, True] * 4  # a warm-up, then 3 interleaved rounds
    assert not any(type(m) is OneDNNLinear for m in model.modules())
    assert set(choice.timings_ms) == {"F.linear", "oneDNN"} and "measured on tiny test step" in choice.reason
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


def test_a_measure_on_the_step_is_timed_both_ways_or_decided_by_its_override(monkeypatch: pytest.MonkeyPatch) -> None:
    switched: list[bool] = []
    state = {"on": False}

    def switch(on: bool) -> None:
        switched.append(on)
        state["on"] = on
    steps: list[bool] = []
    choice = choose_by_step("test measure", "a test step", lambda: steps.append(state["on"]), switch, ("off", "on"),
                            override="TRANSFORMERKIT_TEST_MEASURE")
    assert steps == [False, True] * 4 and not state["on"]  # a warm-up and 3 rounds; left off
    assert set(choice.timings_ms) == {"off", "on"} and "measured on a test step" in choice.reason
    for wish in ("on", "off"):
        monkeypatch.setenv("TRANSFORMERKIT_TEST_MEASURE", wish)
        forced = choose_by_step("test measure", "another step", lambda: steps.append(True), switch, ("off", "on"),
                                override="TRANSFORMERKIT_TEST_MEASURE")
        assert forced == Choice(wish == "on", f"TRANSFORMERKIT_TEST_MEASURE={wish}", {}) and len(steps) == 8


@pytest.mark.skipif("onednn" not in torch.backends.quantized.supported_engines, reason="no oneDNN quantized engine")
@pytest.mark.parametrize("wish", ["on", "off"])
def test_int8_weights_packed_for_either_engine_decode_alike(monkeypatch: pytest.MonkeyPatch, wish: str) -> None:
    from transformerkit.generation.search import greedy_decode
    monkeypatch.setenv(INT8_OVERRIDE, wish)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50)).eval()
    src = torch.randint(3, 50, (3, 9))
    engine = torch.backends.quantized.engine
    on_x86 = quantize_linear_int8(copy.deepcopy(model), "x86")
    chosen = copy.deepcopy(model)
    choice = quantize_int8_where_fastest(chosen, rows=(8,))
    assert choice.use == (wish == "on") and INT8_OVERRIDE in choice.reason
    assert torch.backends.quantized.engine == engine  # the process's setting is put back
    with torch.inference_mode():
        reference, ours = (m.encode(src)[0] for m in (on_x86, chosen))
        torch.testing.assert_close(ours, reference, atol=2e-2, rtol=0)
        assert torch.equal(greedy_decode(chosen, src, max_length_offset=4), greedy_decode(on_x86, src,
                                                                                           max_length_offset=4))


@pytest.mark.skipif("onednn" not in torch.backends.quantized.supported_engines, reason="no oneDNN quantized engine")
def test_int8_weights_packed_for_onednn_run_on_onednn_kernels() -> None:
    import subprocess
    import sys
    script = ("import sys, torch\nfrom torch import nn\n"
              "from transformerkit.backends.quantization import quantize_linear_int8\n"
              "q = quantize_linear_int8(nn.Sequential(nn.Linear(64, 256)), sys.argv[1])\n"
              "torch.backends.quantized.engine = 'x86'\nprint('RUN', flush=True)\nq(torch.randn(8, 64))\n")
    for engine, on_onednn in (("onednn", True), ("x86", False)):
        out = subprocess.run([sys.executable, "-c", script, engine], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                             capture_output=True, text=True, check=True).stdout
        assert ("exec,cpu,matmul" in out.split("RUN", 1)[1]) == on_onednn, engine


@pytest.mark.skipif("onednn" not in torch.backends.quantized.supported_engines, reason="no oneDNN quantized engine")
def test_the_int8_engine_is_measured_on_the_models_decoding_products(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INT8_OVERRIDE, raising=False)
    choice = choose_int8_engine(EncoderDecoderTransformer(preset("tiny", vocab_size=50)), rows=(1, 8),
                                rounds=3)
    assert set(choice.timings_ms) == {"x86 (FBGEMM)", "oneDNN"}
    assert "1/8 rows × one decoding step's products (" in choice.reason and "weights) int8:" in choice.reason
    assert choice.use == (choice.timings_ms["oneDNN"] < 0.95 * choice.timings_ms["x86 (FBGEMM)"])


@pytest.mark.parametrize("wish", ["on", "off"])
def test_bf16_inference_attention_upcasts_as_measured_never_under_autocast_and_either_way_alike(
        monkeypatch: pytest.MonkeyPatch, wish: str) -> None:
    from transformerkit.nn import attention_kernels
    monkeypatch.setenv(UPCAST_OVERRIDE, wish)
    attention_kernels._upcast_measured_faster.cache_clear()  # measured once per process and shape class
    seen: list[torch.dtype] = []
    fused = attention_kernels.fused_attention
    monkeypatch.setattr(attention_kernels, "fused_attention", lambda q, *rest: seen.append(q.dtype) or fused(q, *rest))
    q, k, v = (torch.randn(2, 4, n, 16, generator=torch.Generator().manual_seed(n)) for n in (1, 9, 9))
    with torch.inference_mode():
        out = attention_kernels.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, False, 0.0, "auto")[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast runs the kernel in bf16 whatever its inputs
            attention_kernels.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, False, 0.0, "auto")
    attention_kernels._upcast_measured_faster.cache_clear()
    assert seen == [torch.float32 if wish == "on" else torch.bfloat16, torch.bfloat16]
    torch.testing.assert_close(out.float(), fused(q, k, v), atol=2e-2, rtol=2e-2)


def test_the_speed_flag_sets_the_measures_override_and_refuses_other_names(monkeypatch: pytest.MonkeyPatch,
                                                                           capsys) -> None:
    from transformerkit.cli import main
    for name, variable in OVERRIDES.items():
        monkeypatch.setenv(variable, "auto")  # put back after the test, whatever main sets
        assert main(["--speed", f"{name}=off", "info"]) == 0
        assert os.environ[variable] == "off" and f"'{variable}': 'off'" in capsys.readouterr().out
    assert main(["--speed", "attention=fast", "info"]) == 2
    assert capsys.readouterr().err == ("transformerkit: error: --speed takes MEASURE=on|off|auto with a measure among "
                                       f"{', '.join(OVERRIDES)}, got 'attention=fast'\n")


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
    first = choose_decoding_layout(model, rounds=2)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded sampler after loading draws what it would have
    assert set(first.timings_ms) == {"plain weights", "blocked layout"}
    maps = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert f"1/8 rows × one decoding step's products ({maps} maps, " in first.reason and "float32:" in first.reason
    assert first.use == (first.timings_ms["blocked layout"] < 0.95 * first.timings_ms["plain weights"])
    again = choose_decoding_layout(model, rounds=2)
    assert again.use == first.use and again.timings_ms == first.timings_ms and "kept in" in again.reason
    assert not choose_decoding_layout(model.to(torch.float16)).use  # not a layout for fp16


def test_a_decoding_steps_products_call_every_weight_shape_as_often_as_the_model_holds_it() -> None:
    from collections import Counter
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50))
    products = DecodingProducts.of(model, rows=(1, 3), dtype=torch.float32)
    calls: Counter[tuple[int, int, int]] = Counter()

    def counting(linear: torch.nn.Linear):
        def forward(x: torch.Tensor) -> torch.Tensor:
            calls[(linear.in_features, linear.out_features, x.shape[0])] += 1
            return linear(x)
        return forward
    products.step(counting, steps=2)()
    expected: Counter[tuple[int, int, int]] = Counter()
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            for rows in (1, 3):
                expected[(m.in_features, m.out_features, rows)] += 2
    assert calls == expected and len({shape[:2] for shape in calls}) > 1


def test_a_wrong_layout_override_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAYOUT_OVERRIDE, "yes")
    with pytest.raises(ValueError, match=f"{LAYOUT_OVERRIDE} must be auto, on or off, got 'yes'"):
        choose_decoding_layout(EncoderDecoderTransformer(preset("tiny", vocab_size=50)))


def slow_step(slow_in_bf16: bool, calls: list[bool]):
    """A stand-in for a training step whose bf16 run takes 10× as long as its fp32 run, or the reverse."""
    def step(bf16: bool) -> None:
        calls.append(bf16)
        time.sleep(0.02 if bf16 == slow_in_bf16 else 0.002)
    return step


def test_auto_precision_is_fp32_without_measuring_where_bf16_is_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "native_bf16", lambda: False)  # an AVX2-only CPU
    calls: list[bool] = []
    choice = choose_precision("auto", "a step", slow_step(False, calls))
    assert not choice.use and calls == [] and "no bf16 hardware" in choice.reason
    assert not choose_precision("fp32", "a step", slow_step(False, calls)).use and calls == []


def test_auto_precision_takes_bf16_only_where_it_measures_faster(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(machine, "native_bf16", lambda: True)
    monkeypatch.setenv("TRANSFORMERKIT_CACHE", str(tmp_path))
    calls: list[bool] = []
    faster = choose_precision("auto", "step A", slow_step(False, calls), rounds=2)
    assert faster.use and set(calls) == {True, False} and faster.timings_ms["bf16"] < faster.timings_ms["fp32"]
    slower = choose_precision("auto", "step B", slow_step(True, calls), rounds=2)
    assert not slower.use and "not 5 % faster" in slower.reason
    calls.clear()
    kept = choose_precision("auto", "step A", slow_step(True, calls), rounds=2)
    assert kept.use and calls == [] and "kept in" in kept.reason  # once per machine and shape
    assert choose_precision("bf16", "step B", slow_step(True, calls)).use and calls == []  # native: as asked
    from transformerkit.cli import main
    assert main(["info"]) == 0
    shown = capsys.readouterr().out
    assert "bf16 in hardware" in shown
    assert "training precision | step A: bf16 — " in shown and "training precision | step B: fp32 — " in shown


def test_explicit_bf16_on_a_cpu_without_bf16_hardware_trains_in_bf16_with_the_cost_measured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "native_bf16", lambda: False)
    calls: list[bool] = []
    choice = choose_precision("bf16", "a step", slow_step(True, calls))
    assert choice.use and "emulated" in choice.reason and choice.timings_ms["bf16"] > choice.timings_ms["fp32"]


def test_onednn_isa_cap_below_bf16_counts_as_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for cap, native in (("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True), ("ALL", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert machine.native_bf16() == native, cap
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not machine.native_bf16()


@needs_onednn
def test_bf16_weights_stay_plain_where_onednn_cannot_lay_them_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """On AVX2-only CPUs PyTorch refuses oneDNN's bf16 reorder (``mkldnn_reorder_linear_weight:
    bf16 path needs the cpu support avx_ne_convert or avx512bw…``): decoding in bf16 must then
    take plain weights, even when the layout is forced on, and never fail."""
    from transformerkit.generation.search import greedy_decode
    monkeypatch.setattr(machine, "onednn_bf16_weights", lambda: False)
    monkeypatch.setenv(LAYOUT_OVERRIDE, "on")
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50)).eval().to(torch.bfloat16)
    loaded = copy.deepcopy(model)
    choice = use_decoding_layout_where_faster(loaded)
    assert not choice.use and "cannot hold bf16 weights" in choice.reason
    assert not any(isinstance(m, DecodingLinear) for m in use_decoding_layout(loaded).modules())
    src = torch.randint(3, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    assert torch.equal(greedy_decode(loaded, src, max_length_offset=5), greedy_decode(model, src, max_length_offset=5))
    fp32 = EncoderDecoderTransformer(preset("tiny", vocab_size=50)).eval()
    assert use_decoding_layout_where_faster(fp32).use  # fp32 weights: the override still applies


@needs_onednn
@pytest.mark.skipif(not machine.onednn_bf16_weights(), reason="oneDNN cannot hold bf16 weights on this CPU "
                    "(no AVX512BW/VL/DQ or AVX-NE-CONVERT): the plain-weight path is tested above")
def test_bf16_weights_take_the_blocked_layout_where_onednn_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAYOUT_OVERRIDE, "on")
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50)).eval().to(torch.bfloat16)
    assert use_decoding_layout_where_faster(model).use
    assert any(isinstance(m, DecodingLinear) for m in model.modules())


@needs_onednn
def test_a_translator_in_the_decoding_layout_runs_under_bf16_autocast() -> None:
    """autocast hands the blocked fp32 weights bf16 activations, which oneDNN's op refuses ("could
    not create a primitive descriptor"): the layer casts them to its weights' dtype."""
    from transformerkit.generation.search import greedy_decode
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8).eval()
    x = torch.randn(3, 16).bfloat16()
    torch.testing.assert_close(DecodingLinear(linear)(x), linear(x.float()), atol=1e-5, rtol=1e-5)
    model = use_decoding_layout(EncoderDecoderTransformer(preset("tiny", vocab_size=50)).eval())
    assert any(isinstance(m, DecodingLinear) for m in model.modules())
    src = torch.randint(3, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert greedy_decode(model, src, max_length_offset=5).shape[0] == 3


def test_auto_inference_dtype_is_fp32_without_bf16_hardware_and_measured_with_it(monkeypatch: pytest.MonkeyPatch,
                                                                                 tmp_path) -> None:
    monkeypatch.setenv("TRANSFORMERKIT_CACHE", str(tmp_path))
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=50)).eval()
    monkeypatch.setattr(machine, "native_bf16", lambda: False)
    choice = choose_inference_dtype(model, rounds=2)
    assert not choice.use and choice.timings_ms == {} and "no bf16 hardware" in choice.reason
    monkeypatch.setattr(machine, "native_bf16", lambda: True)
    choice = choose_inference_dtype(model, rounds=2)
    assert set(choice.timings_ms) == {"fp32", "bf16"}
    assert choice.use == (choice.timings_ms["bf16"] < 0.95 * choice.timings_ms["fp32"])
