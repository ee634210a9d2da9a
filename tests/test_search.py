"""Greedy and beam search: known best on a table, beam 1 = greedy, batch independence, heatmaps."""

import itertools
import math

import pytest
import torch

from transformerkit.config import preset
from transformerkit.generation.search import Hypothesis, beam_search, greedy_decode, length_penalty, translate_ids
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

PAD, BOS, EOS, A, B, C = 0, 1, 2, 3, 4, 5
VOCAB = 6


class TableDecoder:
    """Next-token probabilities looked up by the prefix generated so far (a hand-built model)."""

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], rows: int) -> None:
        self.table = table
        self.histories: list[tuple[int, ...]] = [() for _ in range(rows)]
        self.first = True

    def distribution(self, prefix: tuple[int, ...]) -> dict[int, float]:
        return self.table.get(prefix, {EOS: 1.0})

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.first:
            self.histories = [h + (int(t),) for h, t in zip(self.histories, tokens[:, 0])]
        self.first = False
        out = torch.full((len(self.histories), VOCAB), float("-inf"))
        for row, history in enumerate(self.histories):
            for token, p in self.distribution(history).items():
                out[row, token] = math.log(p)
        return out

    def select(self, rows: torch.Tensor) -> None:
        self.histories = [self.histories[i] for i in rows.tolist()]


TABLE = {
    (): {A: 0.5, B: 0.4, EOS: 0.1},
    (A,): {A: 0.34, B: 0.33, EOS: 0.33},
    (B,): {EOS: 0.9, A: 0.05, B: 0.05},
    (A, A): {C: 0.5, EOS: 0.5},
    (A, B): {EOS: 1.0},
    (B, A): {EOS: 1.0},
    (B, B): {C: 1.0},
}


def exhaustive_best(table: dict, max_len: int, alpha: float) -> Hypothesis:
    """Score every sequence up to ``max_len`` tokens (EOS included) and return the best."""
    best = Hypothesis([], float("-inf"))
    for length in range(1, max_len + 1):
        for body in itertools.product([A, B, C], repeat=length - 1):
            logp = 0.0
            for i, token in enumerate(body + (EOS,)):
                p = table.get(body[:i], {EOS: 1.0}).get(token, 0.0)
                logp += math.log(p) if p > 0 else float("-inf")
            normalized = logp / length_penalty(length, alpha)
            if normalized > best.score:
                best = Hypothesis(list(body), normalized)
    return best


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_search_finds_the_known_best(alpha: float) -> None:
    expected = exhaustive_best(TABLE, max_len=4, alpha=alpha)
    found = beam_search(TableDecoder(TABLE, rows=3), [4], beam=3, bos_id=BOS, eos_id=EOS, alpha=alpha)[0]
    assert found.tokens == expected.tokens
    assert found.score == pytest.approx(expected.score)


def test_beam_beats_greedy_on_the_table() -> None:
    best = beam_search(TableDecoder(TABLE, rows=2), [4], beam=2, bos_id=BOS, eos_id=EOS, alpha=0.0)[0]
    assert best.tokens == [B] and best.score == pytest.approx(math.log(0.4 * 0.9))
    greedy = beam_search(TableDecoder(TABLE, rows=1), [4], beam=1, bos_id=BOS, eos_id=EOS, alpha=0.0)[0]
    assert greedy.tokens[0] == A  # greedy commits to the locally best first token


def test_maximum_length_forces_eos() -> None:
    loop = {(): {A: 1.0}, (A,): {A: 1.0}, (A, A): {A: 1.0}}
    found = beam_search(TableDecoder(loop, rows=2), [3], beam=2, bos_id=BOS, eos_id=EOS, alpha=0.0)[0]
    assert found.tokens == [A, A]  # 3 tokens including the forced EOS


def random_model(**changes) -> EncoderDecoderTransformer:
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=40, d_model=32, d_ff=64, num_heads=4, dropout=0.0, **changes)
    model = EncoderDecoderTransformer(config).eval()
    with torch.no_grad():  # make EOS rare so outputs have some length
        model.output_projection.weight[config.eos_id] *= 0.2
    return model


def test_beam_size_one_equals_greedy() -> None:
    model = random_model()
    src = torch.randint(3, 40, (5, 9), generator=torch.Generator().manual_seed(1))
    src[2, 5:] = PAD
    greedy = greedy_decode(model, src, max_length_offset=10).tolist()
    beamed = translate_ids(model, src, beam=1, alpha=0.6, max_length_offset=10)
    for row, hyp, length in zip(greedy, beamed, (src != PAD).sum(1).tolist()):
        if EOS in row:
            assert hyp.tokens == row[:row.index(EOS)]
        else:  # both stopped at the sentence's cap (length + 10 tokens); beam forces EOS as the last
            assert hyp.tokens == row[:length + 10 - 1]


@pytest.mark.parametrize("kernel", ["fused", "reference"])
def test_beam_output_does_not_depend_on_batch_or_padding(kernel: str) -> None:
    model = random_model(attention_kernel=kernel)
    g = torch.Generator().manual_seed(2)
    sentence = torch.randint(3, 40, (1, 6), generator=g)
    alone = translate_ids(model, sentence, beam=4, max_length_offset=8)[0]
    others = torch.randint(3, 40, (3, 12), generator=g)
    batch = torch.full((4, 12), PAD)
    batch[:3] = others
    batch[3, :6] = sentence[0]
    in_batch = translate_ids(model, batch, beam=4, max_length_offset=8)[3]
    assert in_batch.tokens == alone.tokens
    assert in_batch.score == pytest.approx(alone.score, abs=1e-4)
    assert len(alone.tokens) > 0


def test_cross_attention_heatmap_for_either_kernel(tmp_path) -> None:
    from transformerkit.data.tokenizer import SubwordTokenizer
    from transformerkit.generation.config import GenerationConfig
    from transformerkit.inference.translation import Translator, attention_heatmap, cross_attention

    texts = ["Open the file", "Datei öffnen", "Save the file", "Datei speichern", "Close the window",
             "Fenster schließen"] * 20
    tokenizer = SubwordTokenizer.train(texts, vocab_size=60, min_frequency=1)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64)).eval()
    translator = Translator(model, tokenizer, GenerationConfig())
    results = []
    for kernel in ("fused", "reference"):
        model.set_attention_kernel(kernel)
        weights, src_tokens, tgt_tokens = cross_attention(translator, "Open the file", "Datei öffnen")
        assert weights.shape == (len(tgt_tokens), len(src_tokens))
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(tgt_tokens)))
        assert tgt_tokens[-1] == "</s>" and src_tokens[-1] == "</s>"
        results.append(weights)
        path = attention_heatmap(translator, "Open the file", "Datei öffnen", tmp_path / f"{kernel}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    torch.testing.assert_close(results[0], results[1])
    # the source is cut as for translating it: a model trained on cut sources is shown what it reads
    cut = Translator(model, tokenizer, GenerationConfig(max_source_tokens=2))
    _, src_tokens, _ = cross_attention(cut, "Open the file", "Datei öffnen")
    assert src_tokens == tokenizer.tokens(tokenizer.encode(["Open the file"])[0][:2] + [tokenizer.eos_id])
