"""Scaled dot-product and multi-head attention: the two kernels agree, masks hold, caches are exact."""

import math

import pytest
import torch

from transformerkit.nn import (KVCache, MultiHeadAttention, RotaryEmbedding, causal_mask, fused_attention, merge_masks,
                               padding_mask, reference_attention)

ATOL = 1e-5


def random_mask(batch: int, q_len: int, k_len: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, 1, q_len, k_len, generator=generator) > 0.3


@pytest.mark.parametrize("d_k,d_v", [(16, 16), (8, 24), (32, 4)])
@pytest.mark.parametrize("masking", ["none", "padding", "causal", "padding+causal", "arbitrary"])
def test_kernels_agree_self_attention(d_k: int, d_v: int, masking: str) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=32, num_heads=4, d_k=d_k, d_v=d_v).eval()
    x = torch.randn(3, 7, 32)
    ids = torch.tensor([[5] * 7, [5] * 4 + [0] * 3, [5] * 2 + [0] * 5])
    mask = None
    causal = "causal" in masking
    if "padding" in masking:
        mask = padding_mask(ids, pad_id=0)
    if masking == "arbitrary":
        mask = random_mask(3, 7, 7, torch.Generator().manual_seed(1))
    mha.kernel = "reference"
    ref, weights = mha(x, mask=mask, causal=causal)
    mha.kernel = "fused"
    fused, no_weights = mha(x, mask=mask, causal=causal)
    assert no_weights is None and weights is not None
    torch.testing.assert_close(fused, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 7), atol=ATOL, rtol=0)


@pytest.mark.parametrize("d_k,d_v", [(16, 16), (8, 24)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_kernels_agree_cross_attention(d_k: int, d_v: int, with_mask: bool) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=32, num_heads=2, d_k=d_k, d_v=d_v, cross=True).eval()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    mask = padding_mask(torch.tensor([[1] * 9, [1] * 3 + [0] * 6]), 0) if with_mask else None
    mha.kernel = "reference"
    ref, weights = mha(x, memory=memory, mask=mask)
    mha.kernel = "fused"
    fused, _ = mha(x, memory=memory, mask=mask)
    torch.testing.assert_close(fused, ref, atol=ATOL, rtol=0)
    assert weights.shape == (2, 2, 5, 9)
    if with_mask:
        assert torch.all(weights[1, :, :, 3:] == 0)


@pytest.mark.parametrize("kernel", ["fused", "reference"])
def test_rows_sharing_a_memory_row_attend_as_if_it_were_repeated(kernel: str) -> None:
    """Grouped cross-attention (a sentence's beams over one row of encoder output) = repeated memory."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=32, num_heads=2, d_k=8, d_v=24, cross=True, kernel=kernel).eval()
    x, memory = torch.randn(6, 2, 32), torch.randn(2, 9, 32)  # 3 query rows per memory row
    mask = padding_mask(torch.tensor([[1] * 9, [1] * 3 + [0] * 6]), 0)
    shared, shared_weights = mha(x, memory=memory, mask=mask, need_weights=True)
    repeated, repeated_weights = mha(x, memory=memory.repeat_interleave(3, 0), mask=mask.repeat_interleave(3, 0),
                                     need_weights=True)
    torch.testing.assert_close(shared, repeated, atol=ATOL, rtol=0)
    torch.testing.assert_close(shared_weights, repeated_weights, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="equal groups"):
        mha(torch.randn(5, 2, 32), memory=memory)


def test_reference_kernel_is_the_formula() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 6)
    out, weights = reference_attention(q, k, v)
    expected_weights = torch.softmax(q[0, 0] @ k[0, 0].T / math.sqrt(4), dim=-1)
    torch.testing.assert_close(weights[0, 0], expected_weights)
    torch.testing.assert_close(out[0, 0], expected_weights @ v[0, 0])


@pytest.mark.parametrize("kernel", ["reference", "fused"])
def test_fully_masked_row_gives_zeros_not_nan(kernel: str) -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 2, 3, 8, requires_grad=True)
    k = torch.randn(2, 2, 4, 8, requires_grad=True)
    v = torch.randn(2, 2, 4, 8, requires_grad=True)
    mask = torch.ones(2, 1, 3, 4, dtype=torch.bool)
    mask[0, :, 1] = False  # query 1 of sequence 0 sees nothing
    mask[1] = False  # sequence 1 sees nothing at all
    out = reference_attention(q, k, v, mask)[0] if kernel == "reference" else fused_attention(q, k, v, mask)
    assert not out.isnan().any()
    assert torch.all(out[0, :, 1] == 0) and torch.all(out[1] == 0)
    assert out[0, :, 0].abs().sum() > 0
    out.sum().backward()
    for t in (q, k, v):
        assert not t.grad.isnan().any()


def test_causal_mask_is_aligned_to_the_end_for_caches() -> None:
    mask = causal_mask(2, 4)[0, 0]
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(3, 3)[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert merge_masks(None, None) is None


@pytest.mark.parametrize("rotary", [False, True])
def test_cached_self_attention_equals_full(rotary: bool) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, 8, 12, rotary=RotaryEmbedding(8) if rotary else None).eval()
    x = torch.randn(2, 6, 32)
    positions = torch.arange(6).expand(2, 6)
    full, _ = mha(x, causal=True, positions=positions)
    cache = KVCache(capacity=6)
    steps = [mha(x[:, :3], causal=True, positions=positions[:, :3], cache=cache)[0]]  # a prompt of 3
    for t in range(3, 6):
        steps.append(mha(x[:, t:t + 1], causal=True, positions=positions[:, t:t + 1], cache=cache)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="overflow"):
        mha(x[:, :1], causal=True, positions=positions[:, :1], cache=cache)


def test_cross_attention_cache_projects_memory_once() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, 8, 8, cross=True).eval()
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    full, _ = mha(x, memory=memory)
    cache = KVCache(capacity=5)
    first, _ = mha(x[:, :1], memory=memory, cache=cache)
    rest, _ = mha(x[:, 1:], memory=torch.zeros_like(memory), cache=cache)  # cached: memory ignored
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=ATOL, rtol=0)


def test_a_registered_kernel_runs_in_every_layer_of_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel is one function and one registration; a model names it in its config."""
    from transformerkit.config import preset
    from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
    from transformerkit.nn.attention_kernels import ATTENTION_KERNELS, register_attention_kernel

    calls = []

    def softmax_in_float64(q, k, v, mask, causal, dropout_p):  # the formula, in double precision
        calls.append(q.shape)
        out, weights = ATTENTION_KERNELS["reference"](q.double(), k.double(), v.double(), mask, causal, dropout_p)
        return out.to(q.dtype), None

    monkeypatch.setitem(ATTENTION_KERNELS, "float64", None)  # removed again after the test
    register_attention_kernel("float64", softmax_in_float64)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(preset("tiny", attention_kernel="float64", dropout=0.0)).eval()
    src, tgt = torch.randint(3, 1000, (2, 7)), torch.randint(3, 1000, (2, 5))
    logits = model(src, tgt)
    assert len(calls) == 2 + 2 * 2  # encoder self-attention ×2 layers, decoder self + cross ×2 layers
    model.set_attention_kernel("reference")
    torch.testing.assert_close(logits, model(src, tgt), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="attention kernel must be one of auto, fused, reference, float64, got 'flash'"):
        model.set_attention_kernel("flash")


def test_unknown_kernel_is_rejected() -> None:
    with pytest.raises(ValueError, match="kernel"):
        MultiHeadAttention(16, 2, 8, 8, kernel="flash")  # type: ignore[arg-type]


@pytest.mark.parametrize("cross", [False, True])
def test_fused_projections_load_separate_matrices_and_compute_the_formula(cross: bool) -> None:
    """A checkpoint with separate W^Q, W^K, W^V loads into the fused projections, and the module
    computes Concat(head_1 … head_h) W^O with head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)."""
    torch.manual_seed(0)
    d_model, heads, d_k, d_v = 12, 2, 4, 5
    separate = {f"{name}.{kind}": torch.randn(heads * (d_v if name == "v_proj" else d_k), *([d_model] if kind == "weight" else []))
                for name in ("q_proj", "k_proj", "v_proj") for kind in ("weight", "bias")}
    separate |= {"out_proj.weight": torch.randn(d_model, heads * d_v), "out_proj.bias": torch.randn(d_model)}
    mha = MultiHeadAttention(d_model, heads, d_k, d_v, cross=cross).eval()
    mha.load_state_dict(separate)
    x, memory = torch.randn(2, 3, d_model), torch.randn(2, 6, d_model)
    source = memory if cross else x
    project = lambda name, t: t @ separate[f"{name}.weight"].T + separate[f"{name}.bias"]  # noqa: E731
    q, k, v = project("q_proj", x), project("k_proj", source), project("v_proj", source)
    outputs = [torch.softmax(q[..., i * d_k:(i + 1) * d_k] @ k[..., i * d_k:(i + 1) * d_k].transpose(1, 2) / d_k ** 0.5,
                             -1) @ v[..., i * d_v:(i + 1) * d_v] for i in range(heads)]
    expected = project("out_proj", torch.cat(outputs, -1))
    out, _ = mha(x, memory=memory if cross else None)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="cross-attention needs memory, self-attention takes none"):
        mha(x, memory=None if cross else memory)


@pytest.mark.parametrize("wish", ["on", "off", "auto"])
def test_auto_kernel_takes_the_formula_for_bf16_training_on_a_cpu_where_measured_faster(
        monkeypatch: pytest.MonkeyPatch, tmp_path, wish: str) -> None:
    from transformerkit.backends.calibration import ATTENTION_OVERRIDE, speed_choices
    from transformerkit.nn.attention_kernels import _formula_measured_faster, formula_is_faster

    monkeypatch.setenv(ATTENTION_OVERRIDE, wish)
    monkeypatch.setenv("TRANSFORMERKIT_CACHE", str(tmp_path))
    _formula_measured_faster.cache_clear()  # measured once per process and shape class
    q = torch.randn(2, 4, 5, 8)
    assert not formula_is_faster(q)  # fp32: the fused kernel
    with torch.no_grad():
        assert not formula_is_faster(q.bfloat16())  # inference: the fused kernel
    chosen = formula_is_faster(q.bfloat16())
    if wish == "auto":
        (measure, choice), = speed_choices().items()
        assert measure == "attention formula | bf16 forward+backward, 8 rows × 4 heads × 16 positions × 8"
        assert chosen == choice["use"] == (choice["timings_ms"]["formula"] < 0.95 * choice["timings_ms"]["fused kernel"])
    else:
        assert chosen == (wish == "on") and speed_choices() == {}
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=32, num_heads=4, d_k=8, d_v=8)  # default kernel: auto
    assert mha.kernel == "auto"
    x = torch.randn(2, 6, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto, weights = mha(x, causal=True)  # 4 heads × 6 positions × 8: the class measured above
        mha.kernel = "reference" if chosen else "fused"
        taken, _ = mha(x, causal=True)
    _formula_measured_faster.cache_clear()
    assert weights is None and torch.equal(auto, taken)  # the same computation


def test_dropout_keeps_each_element_with_probability_one_minus_p_and_rescales() -> None:
    from transformerkit.nn.dropout import Dropout, dropout

    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = dropout(x, 0.1)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003  # 400,000 draws: σ ≈ 0.0005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    lanes = kept.flatten()[:399_996].view(-1, 4).float().mean(dim=0)  # each 16-bit lane of a draw is uniform
    assert (lanes - 0.9).abs().max() < 0.006
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1), y)  # the default generator's seed decides
    layer = Dropout(0.3).eval()
    assert layer(x) is x and isinstance(layer, torch.nn.Dropout)
    x.requires_grad_(True)
    dropout(x, 0.5).sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 2.0}
