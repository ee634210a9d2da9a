"""The encoder-decoder Transformer: padding invariance, causality, tying, parameter counts, caching."""

from typing import Any

import pytest
import torch

from transformerkit.config import TABLE3_ROWS, EncoderDecoderConfig, preset
from transformerkit.generation.search import greedy_decode
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

ATOL = 1e-5
VARIANTS = [
    {},
    {"norm_position": "pre", "activation": "gelu"},
    {"positional": "learned", "max_positions": 32},
    {"positional": "rotary"},
    {"d_k": 4, "d_v": 12, "tgt_vocab_size": 37, "tie_embeddings": False},
]


def tiny(**changes: Any) -> EncoderDecoderConfig:
    return preset("tiny", vocab_size=50, d_model=32, d_ff=64, num_heads=4, dropout=0.0, **changes)


def model_for(**changes: Any) -> EncoderDecoderTransformer:
    torch.manual_seed(0)
    return EncoderDecoderTransformer(tiny(**changes)).eval()


@pytest.mark.parametrize("changes", VARIANTS)
@pytest.mark.parametrize("kernel", ["fused", "reference"])
def test_padding_invariance(changes: dict, kernel: str) -> None:
    model = model_for(**changes, attention_kernel=kernel)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, 37, (1, 6), generator=g)
    tgt = torch.randint(3, 37, (1, 5), generator=g)
    alone = model(src, tgt)
    longer_src = torch.randint(3, 37, (1, 11), generator=g)
    longer_tgt = torch.randint(3, 37, (1, 9), generator=g)
    pad = model.config.pad_id
    batch_src = torch.full((2, 11), pad)
    batch_tgt = torch.full((2, 9), pad)
    batch_src[0, :6], batch_tgt[0, :5] = src[0], tgt[0]
    batch_src[1], batch_tgt[1] = longer_src[0], longer_tgt[0]
    batched = model(batch_src, batch_tgt)
    torch.testing.assert_close(batched[0, :5], alone[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("changes", VARIANTS)
def test_decoder_is_causal(changes: dict) -> None:
    model = model_for(**changes)
    g = torch.Generator().manual_seed(2)
    src = torch.randint(3, 37, (2, 7), generator=g)
    tgt = torch.randint(3, 37, (2, 8), generator=g)
    changed = tgt.clone()
    t = 4
    changed[:, t + 1:] = torch.randint(3, 37, (2, 8 - t - 1), generator=g)
    before, after = model(src, tgt), model(src, changed)
    torch.testing.assert_close(after[:, :t + 1], before[:, :t + 1], atol=ATOL, rtol=0)
    assert not torch.allclose(after[:, t + 1:], before[:, t + 1:], atol=1e-3)


@pytest.mark.parametrize("changes", VARIANTS)
def test_cached_decoding_equals_uncached(changes: dict) -> None:
    model = model_for(**changes)
    g = torch.Generator().manual_seed(3)
    src = torch.randint(3, 37, (2, 7), generator=g)
    src[1, 4:] = model.config.pad_id
    tgt = torch.randint(3, 37, (2, 6), generator=g)
    full = model(src, tgt)
    src_mask = model.source_mask(src)
    memory, _ = model.encode(src, src_mask)
    cache = model.new_cache(6, memory)
    steps = [model.logits(model.decode(tgt[:, t:t + 1], memory, src_mask, cache=cache)[0]) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=ATOL, rtol=0)


def test_kernels_agree_on_the_whole_model() -> None:
    model = model_for(d_k=4, d_v=12)
    src = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    tgt = torch.tensor([[1, 5, 6, 7], [1, 9, 10, 11]])
    fused = model(src, tgt)
    model.set_attention_kernel("reference")
    torch.testing.assert_close(model(src, tgt), fused, atol=ATOL, rtol=0)
    memory, enc_attention = model.encode(src, need_weights=True)
    _, dec_attention = model.decode(tgt, memory, model.source_mask(src), need_weights=True)
    assert len(enc_attention) == 2 and enc_attention[0].cross_attention is None
    assert dec_attention[1].cross_attention.shape == (2, 4, 4, 6)
    assert torch.all(dec_attention[0].cross_attention[0, :, :, 4:] == 0)


def test_three_way_tying_shares_one_tensor() -> None:
    model = EncoderDecoderTransformer(tiny())
    weight = model.output_projection.weight
    assert model.src_embedding.tokens.weight is weight
    assert model.tgt_embedding.tokens.weight is weight
    # one optimizer step keeps them one tensor
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    src = torch.tensor([[5, 6, 7]])
    model.loss(src, torch.tensor([[1, 5, 6]]), torch.tensor([[5, 6, 7]])).backward()
    optimizer.step()
    assert model.src_embedding.tokens.weight.data_ptr() == model.output_projection.weight.data_ptr()


def test_separate_vocabularies() -> None:
    untied = EncoderDecoderTransformer(tiny(tgt_vocab_size=40, tie_embeddings=False))
    weights = {id(untied.src_embedding.tokens.weight), id(untied.tgt_embedding.tokens.weight),
               id(untied.output_projection.weight)}
    assert len(weights) == 3
    assert untied.output_projection.weight.shape == (40, 32)
    two_way = EncoderDecoderTransformer(tiny(tgt_vocab_size=40))
    assert two_way.tgt_embedding.tokens.weight is two_way.output_projection.weight
    assert two_way.src_embedding.tokens.weight is not two_way.output_projection.weight


def closed_form_parameters(c: EncoderDecoderConfig) -> int:
    """Parameter count from the architecture's formulas (an independent check of the modules)."""
    d, h, dk, dv, ff = c.d_model, c.num_heads, c.head_dim_k, c.head_dim_v, c.d_ff
    b = int(c.bias)
    attention = 2 * d * h * dk + d * h * dv + h * dv * d + b * (2 * h * dk + h * dv + d)
    feed_forward = 2 * d * ff + b * (ff + d)
    layer_norm = 2 * d
    encoder = c.num_encoder_layers * (attention + feed_forward + 2 * layer_norm)
    decoder = c.num_decoder_layers * (2 * attention + feed_forward + 3 * layer_norm)
    if c.norm_position == "pre":
        encoder, decoder = encoder + layer_norm, decoder + layer_norm
    src_v, tgt_v = c.vocab_size, c.target_vocab_size
    if c.shared_vocab and c.tie_embeddings:
        embeddings = src_v * d
    elif c.tie_embeddings:
        embeddings = (src_v + tgt_v) * d
    else:
        embeddings = (src_v + 2 * tgt_v) * d
    if c.positional == "learned":
        embeddings += 2 * c.max_positions * d
    return embeddings + encoder + decoder


@pytest.mark.parametrize("row", list(TABLE3_ROWS))
def test_parameter_counts_match_closed_form_table3(row: str) -> None:
    config = preset("base", **TABLE3_ROWS[row])
    with torch.device("meta"):
        counts = EncoderDecoderTransformer(config).parameter_counts()
    assert counts["total"] == closed_form_parameters(config)


@pytest.mark.parametrize("changes", VARIANTS + [{"bias": False}, {"num_encoder_layers": 1, "num_decoder_layers": 3}])
def test_parameter_counts_match_closed_form_small(changes: dict) -> None:
    config = tiny(**changes)
    counts = EncoderDecoderTransformer(config).parameter_counts()
    assert counts["total"] == closed_form_parameters(config)
    assert counts["embeddings"] + counts["encoder"] + counts["decoder"] + counts["output_projection"] == counts["total"]


def test_base_preset_matches_the_paper_order_of_magnitude() -> None:
    with torch.device("meta"):
        base = EncoderDecoderTransformer(preset("base")).parameter_counts()["total"]
        big = EncoderDecoderTransformer(preset("big")).parameter_counts()["total"]
    assert base == 63_082_496  # paper: 65M with its ~37k shared BPE vocabulary
    assert big == 214_245_376  # paper: 213M


def test_greedy_decoding_stops_at_eos() -> None:
    model = model_for()
    src = torch.tensor([[5, 6, 7], [8, 9, 0]])
    out = greedy_decode(model, src, max_length_offset=9)
    assert out.shape[0] == 2 and out.shape[1] <= 12  # longest source 3 + 9
    for row in out.tolist():
        if model.config.eos_id in row:
            end = row.index(model.config.eos_id)
            assert all(tok == model.config.pad_id for tok in row[end + 1:])
