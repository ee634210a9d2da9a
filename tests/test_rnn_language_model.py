"""The recurrent language model (issue #23): the decoder-only Transformer's tests for a model
whose context is one state vector — cached steps equal the whole sequence at once, a prompt's
outputs do not depend on its batch or its left padding, exact resume — and it is one module plus
one registry line: trained by the language-modeling recipe, saved, loaded, and generating through
the Transformer's sampler and verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_language_model import SONNET
from test_language_model import overrides as transformer_overrides

from transformerkit.checkpoint import load_model_dir, read_model_config, save_model_dir
from transformerkit.cli import main
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.language_modeling import TextGenerator
from transformerkit.models.families import FAMILIES, MODEL_CLASSES
from transformerkit.models.rnn import RNNConfig, RNNEncoderDecoder
from transformerkit.models.rnn_language_model import RNNLanguageModel, RNNLanguageModelConfig
from transformerkit.tasks import load_recipe
from transformerkit.training.trainer import Trainer

PAD = 0


def random_model(**changes: object) -> RNNLanguageModel:
    torch.manual_seed(0)
    config = RNNLanguageModelConfig(d_model=24, num_layers=2, vocab_size=40, dropout=0.0, **changes)  # type: ignore[arg-type]
    return RNNLanguageModel(config).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cached_steps_equal_the_whole_sequence_at_once(cell: str) -> None:
    model = random_model(cell=cell)
    ids = torch.randint(3, 40, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(ids)
        cache = model.new_cache(10)
        prompt = model(ids[:, :4], cache=cache)  # a prompt at once, then one token at a time
        steps = [model(ids[:, t:t + 1], cache=cache) for t in range(4, 10)]
    assert cache.length == 10
    torch.testing.assert_close(torch.cat([prompt, *steps], dim=1), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_prompt_does_not_depend_on_its_batch_or_its_left_padding(cell: str) -> None:
    model = random_model(cell=cell)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts])
    following = torch.tensor([[20], [21], [22]])
    with torch.no_grad():
        cache = model.new_cache(width + 1)
        padded = model(ids, attention_mask=mask, cache=cache)
        after = model(following, attention_mask=torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], 1), cache=cache)
        for row, prompt in enumerate(prompts):
            alone_cache = model.new_cache(len(prompt) + 1)
            alone = model(torch.tensor([prompt]), cache=alone_cache)
            pads = width - len(prompt)
            torch.testing.assert_close(padded[row, pads:], alone[0], atol=1e-5, rtol=1e-5)
            assert torch.count_nonzero(padded[row, :pads]) == 0  # padding positions read nothing
            torch.testing.assert_close(after[row], model(following[row:row + 1], cache=alone_cache)[0],
                                       atol=1e-5, rtol=1e-5)


def test_generation_through_the_transformers_sampler_is_batch_invariant() -> None:
    tokenizer = SubwordTokenizer.train_characters([SONNET])
    torch.manual_seed(0)
    model = RNNLanguageModel(RNNLanguageModelConfig(d_model=32, num_layers=1, dropout=0.0,
                                                    vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id,
                                                    bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)).eval()
    generator = TextGenerator(model, tokenizer, GenerationConfig(max_new_tokens=12, do_sample=False))
    prompts = ["Shall I compare", "So", ""]
    together = generator.generate(prompts)
    assert together == [generator.generate([p])[0] for p in prompts]
    assert all(len(t) > 0 for t in together)


def test_right_padding_is_refused_in_one_line() -> None:
    model = random_model()
    with pytest.raises(ValueError, match=r"takes left padding only \(False before True in every row\)"):
        model(torch.tensor([[5, 6, PAD]]), attention_mask=torch.tensor([[True, True, False]]))
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, cached \+ new\) = \(1, 3\)"):
        model(torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor([[True, True]]))


@pytest.mark.parametrize("bad, message", [
    ({"cell": "rnn"}, "cell"), ({"dropout": 1.0}, "dropout must be in"),
    ({"num_layers": 0}, "num_layers must be a positive integer"), ({"eos_id": 40}, "eos_id \\(40\\) must be")])
def test_configuration_errors(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RNNLanguageModelConfig(vocab_size=40, **bad)  # type: ignore[arg-type]


def test_both_recurrent_families_are_registry_lines_and_their_directories_say_their_task(tmp_path: Path) -> None:
    assert MODEL_CLASSES["transformerkit-rnn-lm"] is RNNLanguageModel and FAMILIES["rnn-lm"] is RNNLanguageModel
    tokenizer = SubwordTokenizer.train_characters([SONNET])
    model = RNNLanguageModel(RNNLanguageModelConfig(d_model=16, vocab_size=tokenizer.vocab_size, tie_embeddings=False))
    save_model_dir(tmp_path / "lm", model, tokenizer, GenerationConfig())  # no task given: the family implies it
    assert read_model_config(tmp_path / "lm").task == "language-modeling"
    loaded, _, _ = load_model_dir(tmp_path / "lm")
    assert isinstance(loaded, RNNLanguageModel) and loaded.config == model.config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    counts = model.parameter_counts()
    assert counts["output_projection"] == 16 * tokenizer.vocab_size and counts["recurrent"] == 2 * 4 * (2 * 16 * 16 + 2 * 16)
    seq2seq = RNNEncoderDecoder(RNNConfig(d_model=16, vocab_size=tokenizer.vocab_size))
    save_model_dir(tmp_path / "mt", seq2seq, tokenizer, GenerationConfig())
    assert read_model_config(tmp_path / "mt").task == "translation"


def overrides(text: Path, out: Path, **extra: object) -> list[str]:
    """The Transformer's language-modeling test recipe with ``model.family: rnn-lm``."""
    transformer = [o for o in transformer_overrides(text, out, **extra) if not o.startswith("model.")]
    return transformer + ["model.family=rnn-lm", "model.d_model=64", "model.num_layers=1", "model.dropout=0.1"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "sonnet.txt"
    path.write_text(SONNET * 20, encoding="utf-8")
    return path


def test_a_recipe_trains_it_resumes_exactly_learns_and_the_verbs_use_it(text_file: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    straight = Trainer(load_recipe(None, overrides(text_file, tmp_path / "a", **{"training.max_steps": 6})))
    assert isinstance(straight.model, RNNLanguageModel)
    straight.train()
    interrupted = tmp_path / "b"
    Trainer(load_recipe(None, overrides(text_file, interrupted, **{"training.max_steps": 3}))).train()
    Trainer(load_recipe(None, overrides(text_file, interrupted, **{"training.max_steps": 6})), resume=True).train()
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000006" / "model.safetensors"))
    b = load_file(str(interrupted / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    learned = Trainer(load_recipe(None, overrides(text_file, tmp_path / "c", **{
        "training.max_steps": 80, "training.validate_every": 40, "training.lr_scale": 1.0})))
    model_dir = learned.train().model_dir
    valid = [json.loads(line) for line in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["event"] == "valid"]
    unigram = 3.04  # nats/character of the sonnet's character frequencies: what a model without context reaches
    assert valid[-1]["valid_loss"] < unigram - 0.5, valid[-1]["valid_loss"]

    capsys.readouterr()  # the training log
    assert main(["generate", "--model", str(model_dir), "--prompt", "Shall I", "--max-new-tokens", "7",
                 "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("Shall I")
    assert main(["explain", "--model", str(model_dir), "--text", "Shall I"]) == 2
    assert "explain walks the Transformer's families" in capsys.readouterr().err
    assert main(["export", "--model", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "has no ONNX export" in capsys.readouterr().err
