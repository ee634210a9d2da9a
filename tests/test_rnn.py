"""The recurrent baseline family (issue #23): the same kinds of tests as the Transformer — cached
decoding equals full recomputation, beam 1 equals greedy, batch and padding invariance, exact
resume — and it is one module plus one registry line: trained, saved, loaded, translated, scored
and plotted through the Transformer's recipe, trainer, checkpoints, search and verbs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import recipe_overrides, weights

from transformerkit.checkpoint import load_model_dir, save_model_dir
from transformerkit.cli import main
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.search import greedy_decode, translate_ids
from transformerkit.models.families import FAMILIES, MODEL_CLASSES
from transformerkit.models.rnn import RNNConfig, RNNEncoderDecoder
from transformerkit.tasks import load_recipe
from transformerkit.training.trainer import Trainer

PAD, EOS = 0, 2
VARIANTS = [{"cell": "lstm"}, {"cell": "gru"}, {"cell": "lstm", "input_feeding": True},
            {"cell": "gru", "attention": "dot", "input_feeding": True}]


def random_model(**changes: object) -> RNNEncoderDecoder:
    torch.manual_seed(0)
    return RNNEncoderDecoder(RNNConfig(d_model=32, vocab_size=40, dropout=0.0, **changes)).eval()  # type: ignore[arg-type]


def sources() -> torch.Tensor:
    src = torch.randint(3, 40, (4, 9), generator=torch.Generator().manual_seed(1))
    src[1, 6:] = PAD
    src[3, 3:] = PAD
    return src


@pytest.mark.parametrize("changes", VARIANTS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_cached_steps_equal_the_whole_target_at_once(changes: dict[str, object]) -> None:
    model = random_model(**changes)
    src = sources()
    tgt = torch.randint(3, 40, (4, 7), generator=torch.Generator().manual_seed(2))
    tgt[:, 0] = 1
    with torch.no_grad():
        whole = model(src, tgt)
        mask = model.source_mask(src)
        memory, _ = model.encode(src, mask)
        cache = model.new_cache(7, memory)
        steps = [model.output(model.decode(tgt[:, t:t + 1], memory, mask, cache=cache)[0], memory, mask, src)
                 for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("changes", VARIANTS[:3], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_outputs_do_not_depend_on_the_batch_or_its_padding(changes: dict[str, object]) -> None:
    model = random_model(**changes)
    src = sources()
    tgt = torch.randint(3, 40, (4, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        together = model(src, tgt)
        alone = model(src[3:, :3], tgt[3:])
    torch.testing.assert_close(alone, together[3:], atol=1e-5, rtol=1e-5)
    in_batch = translate_ids(model, src, beam=4, max_length_offset=6)[3]
    by_itself = translate_ids(model, src[3:, :3], beam=4, max_length_offset=6)[0]
    assert in_batch.tokens == by_itself.tokens and in_batch.score == pytest.approx(by_itself.score, abs=1e-4)


@pytest.mark.parametrize("changes", VARIANTS[1:3], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_beam_size_one_equals_greedy(changes: dict[str, object]) -> None:
    model = random_model(**changes)
    src = sources()
    greedy = greedy_decode(model, src, max_length_offset=10).tolist()
    beamed = translate_ids(model, src, beam=1, alpha=0.6, max_length_offset=10)
    for row, hyp, length in zip(greedy, beamed, (src != PAD).sum(1).tolist()):
        if EOS in row:
            assert hyp.tokens == row[:row.index(EOS)]
        else:  # both stopped at the sentence's cap; beam search forces EOS as the last token
            assert hyp.tokens == row[:length + 10 - 1]


def test_the_family_is_one_registry_line_and_its_directory_loads(tmp_path: Path) -> None:
    assert MODEL_CLASSES["transformerkit-rnn"] is RNNEncoderDecoder and FAMILIES["rnn"] is RNNEncoderDecoder
    from transformerkit.data.tokenizer import SubwordTokenizer

    tokenizer = SubwordTokenizer.train(["open the file", "close the window"] * 5, vocab_size=40)
    model = RNNEncoderDecoder(RNNConfig(d_model=16, vocab_size=tokenizer.vocab_size, tgt_vocab_size=30,
                                        tie_embeddings=False))
    save_model_dir(tmp_path / "rnn", model, tokenizer, GenerationConfig(), task="translation")
    loaded, _, _ = load_model_dir(tmp_path / "rnn")
    assert isinstance(loaded, RNNEncoderDecoder) and loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters()) and counts["output_projection"] == 16 * 30


@pytest.mark.parametrize("bad, message", [
    ({"d_model": 15}, "d_model must be even"), ({"cell": "rnn"}, "cell"), ({"dropout": 1.0}, "dropout must be in"),
    ({"num_decoder_layers": 0}, "num_decoder_layers must be a positive integer")])
def test_configuration_errors(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RNNConfig(**bad)  # type: ignore[arg-type]


def rnn_overrides(corpus: Path, out: Path, **training: object) -> list[str]:
    """The Transformer's test recipe with ``model.family: rnn`` (its model fields replaced)."""
    transformer = [o for o in recipe_overrides(corpus, out, **training) if not o.startswith("model.")]
    return transformer + ["model.family=rnn", "model.d_model=32", "model.num_encoder_layers=1",
                          "model.num_decoder_layers=1", "model.dropout=0.1", "model.input_feeding=true"]


def test_a_recipe_trains_it_resumes_exactly_and_the_verbs_use_it(small_corpus: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    straight = Trainer(load_recipe(None, rnn_overrides(small_corpus, tmp_path / "a", **{"training.max_steps": 6})))
    assert isinstance(straight.model, RNNEncoderDecoder)
    straight.train()
    interrupted = tmp_path / "b"
    Trainer(load_recipe(None, rnn_overrides(small_corpus, interrupted, **{"training.max_steps": 3}))).train()
    Trainer(load_recipe(None, rnn_overrides(small_corpus, interrupted, **{"training.max_steps": 6})),
            resume=True).train()
    a = weights(tmp_path / "a" / "checkpoints" / "step-00000006")
    b = weights(interrupted / "checkpoints" / "step-00000006")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    model = str(tmp_path / "a" / "model")
    source = small_corpus / "test.tsv"
    assert main(["evaluate", "--model", model, "--data", str(source), "--beam", "2"]) == 0
    assert '"bleu"' in capsys.readouterr().out
    assert main(["plot-attention", "--model", model, "--text", "Open the file", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 0
    assert main(["explain", "--model", model, "--text", "Open the file"]) == 2
    assert "explain walks the Transformer's families" in capsys.readouterr().err
