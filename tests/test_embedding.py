"""Token embeddings, sinusoidal / learned / rotary positions."""

import math

import pytest
import torch

from transformerkit.nn import LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding, TokenEmbedding


def test_sinusoidal_table_equals_the_formula() -> None:
    d_model, length = 16, 50
    table = SinusoidalPositionalEncoding(d_model)(torch.arange(length)[None])[0]
    for pos in range(length):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_sinusoidal_positions_follow_offsets() -> None:
    pe = SinusoidalPositionalEncoding(8)
    full = pe(torch.arange(10)[None])
    torch.testing.assert_close(pe(torch.tensor([[7, 8, 9]])), full[:, 7:10])
    with pytest.raises(ValueError, match="d_model"):
        SinusoidalPositionalEncoding(7)


def test_token_embedding_is_scaled_by_sqrt_d_model() -> None:
    torch.manual_seed(0)
    emb = TokenEmbedding(20, 64, padding_idx=0)
    ids = torch.tensor([[3, 4, 0]])
    torch.testing.assert_close(emb(ids), emb.weight[ids] * 8.0)
    assert torch.all(emb(ids)[0, 2] == 0)  # the padding row is zero
    unscaled = TokenEmbedding(20, 64, scale=False)
    torch.testing.assert_close(unscaled(ids), unscaled.weight[ids])


def test_learned_positions_reject_out_of_range() -> None:
    pe = LearnedPositionalEmbedding(4, 8)
    assert pe(torch.arange(4)[None]).shape == (1, 4, 8)
    with pytest.raises(ValueError, match="max_positions"):
        pe(torch.arange(5)[None])


def test_rotary_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq: int, pk: int) -> float:
        rq = rope(q, torch.tensor([[pq]]))
        rk = rope(k, torch.tensor([[pk]]))
        return (rq * rk).sum().item()

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-4)
    assert score(5, 5) == pytest.approx((q * k).sum().item(), abs=1e-4)  # no rotation at equal positions
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    rotated = rope(q, torch.tensor([[7]]))
    torch.testing.assert_close(rotated.norm(), q.norm())  # a rotation keeps the norm
