"""CTranslate2 exports of decoder-only (GPT-2 layout) and encoder-only (BERT layout) models
(``transformerkit export --format ctranslate2``): ``generate --backend ctranslate2`` continues
prompts as our generator does (greedy, prompts of different lengths, EOS, stop strings, streamed
pieces), the encoder's states are ours; layouts CTranslate2's loaders cannot take are named.
(Encoder-decoder exports: tests/test_export.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transformerkit.checkpoint import save_model_dir
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.language_modeling import TextGenerator, load_ctranslate2_generator
from transformerkit.interop.ctranslate2 import save_ctranslate2
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.training.task import model_config_for

ctranslate2 = pytest.importorskip("ctranslate2")
pytest.importorskip("transformers")

TEXTS = ["open the file and save it", "delete this folder now", "print the new image", "close the window"] * 4
PROMPTS = ["open the", "delete this folder now and", "", "print"]


@pytest.fixture(scope="module")
def tokenizer() -> SubwordTokenizer:
    return SubwordTokenizer.train(TEXTS, vocab_size=60)


def trained_gpt(tokenizer: SubwordTokenizer) -> DecoderOnlyTransformer:
    """A tiny GPT trained a little on the texts, so that greedy outputs reach EOS."""
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny", dropout=0.0, attention_dropout=0.0),
                                                    tokenizer))
    rows = [[tokenizer.bos_id] + ids + [tokenizer.eos_id] for ids in tokenizer.encode(TEXTS[:4])]
    width = max(map(len, rows))
    batch = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in rows])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        logits = model.logits(model.hidden_states(batch[:, :-1])[0])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(),
                                                 ignore_index=tokenizer.pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_generate_on_a_ctranslate2_export_is_our_greedy_generation(tokenizer: SubwordTokenizer, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = trained_gpt(tokenizer)
    generation = GenerationConfig(do_sample=False, max_new_tokens=12)
    save_model_dir(tmp_path / "model", model, tokenizer, generation, task="language-modeling")
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "ctranslate2",
                 "--out", str(tmp_path / "ct2")]) == 0
    exported = load_ctranslate2_generator(tmp_path / "ct2")
    ours = TextGenerator(model, tokenizer, generation)
    assert exported.generate(PROMPTS) == ours.generate(PROMPTS)  # prompts of four lengths, one empty
    assert exported.finish_reasons == ours.finish_reasons
    assert ours.finish_reasons == ["stop"] * 4  # each reached EOS
    for changes in ({"stop": ["e"]}, {"repetition_penalty": 1.5}, {"max_new_tokens": 3}):
        mine = TextGenerator(model, tokenizer, GenerationConfig(do_sample=False, **changes))
        theirs = load_ctranslate2_generator(tmp_path / "ct2", do_sample=False, **changes)
        assert theirs.generate(PROMPTS) == mine.generate(PROMPTS), changes
        assert theirs.finish_reasons == mine.finish_reasons, changes
    assert mine.finish_reasons.count("length") >= 3  # max_new_tokens 3 cut most rows
    pieces = list(exported.stream(["open the"]))
    assert pieces == list(ours.stream(["open the"]))  # the same steps streamed
    for backend, directory in (("transformerkit", "model"), ("ctranslate2", "ct2")):
        assert main(["generate", "--model", str(tmp_path / directory), "--backend", backend, "--prompt", "open the",
                     "--greedy", "--dtype", "fp32" if backend == "transformerkit" else "auto"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == printed[1] == "open the" + ours.generate(["open the"])[0]


def test_sampling_on_a_ctranslate2_export_repeats_with_its_seed(tokenizer: SubwordTokenizer, tmp_path: Path) -> None:
    save_ctranslate2(trained_gpt(tokenizer), tmp_path / "ct2", tokenizer, GenerationConfig(), "language-modeling")
    settings = {"do_sample": True, "temperature": 1.5, "top_k": 20, "top_p": 0.95, "max_new_tokens": 10}
    first = load_ctranslate2_generator(tmp_path / "ct2", seed=3, **settings).generate(PROMPTS * 2)
    again = load_ctranslate2_generator(tmp_path / "ct2", seed=3, **settings).generate(PROMPTS * 2)
    assert first == again and len(set(first)) > 2


@pytest.mark.parametrize("pooler", [True, False])
def test_an_encoder_export_gives_our_hidden_states(pooler: bool, tokenizer: SubwordTokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EncoderOnlyTransformer(model_config_for(preset("minilm-l6", num_encoder_layers=2, d_model=32, d_ff=64,
                                                           num_heads=4, pooler=pooler), tokenizer)).eval()
    save_ctranslate2(model, tmp_path / "ct2", tokenizer, GenerationConfig(), "sentence-embedding")
    encoder = ctranslate2.Encoder(str(tmp_path / "ct2"), device="cpu")
    texts = ["open the file", "delete this folder now", "print"]
    rows = tokenizer.encode(texts, add_special_tokens=True)
    output = encoder.forward_batch([tokenizer.tokens(row) for row in rows])
    hidden = torch.as_tensor(numpy_of(output.last_hidden_state))
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in rows])
    with torch.no_grad():
        expected, _ = model(ids)
    for i, row in enumerate(rows):
        torch.testing.assert_close(hidden[i, :len(row)], expected[i, :len(row)], atol=1e-4, rtol=0)
    if pooler:
        torch.testing.assert_close(torch.as_tensor(numpy_of(output.pooler_output)), model.pooled(expected),
                                   atol=1e-4, rtol=0)
    else:
        assert output.pooler_output is None


def numpy_of(storage: object) -> object:
    import numpy

    return numpy.array(storage)


def test_layouts_ctranslate2_cannot_take_are_named(tokenizer: SubwordTokenizer, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny", positional="rotary"), tokenizer))
    save_model_dir(tmp_path / "rotary", model, tokenizer, GenerationConfig())
    assert main(["export", "--model", str(tmp_path / "rotary"), "--format", "ctranslate2",
                 "--out", str(tmp_path / "out")]) == 2
    assert "positional='rotary' (GPT-2 needs 'learned')" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_serve_runs_a_ctranslate2_export(tokenizer: SubwordTokenizer, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``serve --backend ctranslate2``: completions (batched and streamed) of a language model's
    export are our generator's; a translator's export translates as ``translate --backend
    ctranslate2`` does and refuses attention; other exports are named in one line."""
    from fastapi.testclient import TestClient

    from transformerkit.inference.translation import load_ctranslate2_translator
    from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
    from transformerkit.serve import create_app

    model = trained_gpt(tokenizer)
    save_ctranslate2(model, tmp_path / "lm", tokenizer, GenerationConfig(do_sample=False, max_new_tokens=8),
                     "language-modeling")
    ours = TextGenerator(model, tokenizer, GenerationConfig(do_sample=False, max_new_tokens=8))
    with TestClient(create_app(tmp_path / "lm", backend="ctranslate2")) as client:
        answer = client.post("/v1/completions", json={"prompt": PROMPTS[:2], "max_tokens": 8, "temperature": 0})
        assert [c["text"] for c in answer.json()["choices"]] == ours.generate(PROMPTS[:2])
        with client.stream("POST", "/v1/completions", json={"prompt": "open the", "max_tokens": 8,
                                                            "temperature": 0, "stream": True}) as events:
            lines = [line for line in events.iter_lines() if line.startswith("data: {")]
        import json

        streamed = "".join(c["text"] for line in lines for c in json.loads(line[6:])["choices"])
        assert streamed == ours.generate(["open the"])[0]
        assert "heads" in client.get("/").text  # the page

    torch.manual_seed(0)
    translator = EncoderDecoderTransformer(model_config_for(preset("tiny", d_model=32, d_ff=64), tokenizer)).eval()
    save_ctranslate2(translator, tmp_path / "mt", tokenizer, GenerationConfig(beam=2, max_length_offset=6),
                     "translation")
    texts = ["open the file", "", "close the window"]
    with TestClient(create_app(tmp_path / "mt", backend="ctranslate2")) as client:
        answer = client.post("/v1/translate", json={"texts": texts})
        assert answer.json()["translations"] == load_ctranslate2_translator(tmp_path / "mt").translate(texts)
        refused = client.post("/v1/translate", json={"texts": texts, "attention": True})
        assert refused.status_code == 400 and "CTranslate2" in refused.json()["error"]["message"]

    encoder = EncoderOnlyTransformer(model_config_for(preset("minilm-l6", num_encoder_layers=1, d_model=32, d_ff=64,
                                                             num_heads=4), tokenizer))
    save_ctranslate2(encoder, tmp_path / "encoder", tokenizer, GenerationConfig(), "sentence-embedding")
    assert main(["serve", "--model", str(tmp_path / "encoder"), "--backend", "ctranslate2"]) == 2
    assert ("serve --backend ctranslate2 serves translation, summarization, language-modeling models, not "
            "sentence-embedding models") in capsys.readouterr().err
