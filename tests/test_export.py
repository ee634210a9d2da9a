"""Encoder-decoder models exported to Hugging Face (``transformerkit export --format hf``): the
paper's post-norm layout as ``MarianMTModel``, pre-norm as ``PegasusForConditionalGeneration``;
logits equal ours on a padded batch, greedy and beam search (α = 0) give our translations, and
``AutoTokenizer`` + ``generate`` on a padded batch work on the exported directory as a new user
would call them (transformers 5 has no translation pipeline any more)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from transformerkit.checkpoint import CheckpointError, load_model_dir, save_model_dir
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.translation import Translator, load_translator
from transformerkit.interop.seq2seq import residual_order, save_hf_seq2seq
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.nn.embedding import SinusoidalPositionalEncoding
from transformerkit.training.task import model_config_for

transformers = pytest.importorskip("transformers")

TEXTS = ["open the file and save it", "delete this folder now", "print the new image", "close the window",
         "copy the settings to a new file", "the image is saved in the folder"] * 4
SENTENCES = ["open the file", "close the window now", "print the image", "save the new folder", "delete it"]


def trained_translator(directory: Path, norm_position: str) -> Path:
    """A tiny translator trained for a few steps (so that its outputs end before the length limit)."""
    tokenizer = SubwordTokenizer.train(TEXTS, vocab_size=60)
    torch.manual_seed(0)
    config = model_config_for(preset("tiny", d_model=32, d_ff=64, dropout=0.0, norm_position=norm_position),
                              tokenizer, tgt_vocab_size=None)
    model = EncoderDecoderTransformer(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ids = [tokenizer.encode([t])[0] + [tokenizer.eos_id] for t in TEXTS[:6]]
    width = max(map(len, ids))
    batch = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in ids])
    tgt_in = torch.cat([torch.full((6, 1), tokenizer.bos_id), batch[:, :-1]], dim=1)
    for _ in range(60):  # learn to copy: short, EOS-terminated outputs
        loss = model.loss(batch, tgt_in, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_model_dir(directory, model.eval(), tokenizer, GenerationConfig(beam=4, length_penalty=0.0))
    return directory


def test_the_sinusoids_in_their_order_are_ours_permuted() -> None:
    ours = SinusoidalPositionalEncoding(8)(torch.arange(5)[None])[0]
    angles = torch.arange(5.0)[:, None] * 10000 ** (-torch.arange(0, 8, 2) / 8)
    theirs = torch.cat([angles.sin(), angles.cos()], dim=1)  # Marian's table: sines, then cosines
    torch.testing.assert_close(ours[:, residual_order(8)], theirs)


@pytest.mark.parametrize("norm_position, architecture", [("post", "MarianMTModel"),
                                                         ("pre", "PegasusForConditionalGeneration")])
def test_exported_logits_and_translations_are_ours(norm_position: str, architecture: str, tmp_path: Path) -> None:
    model_dir = trained_translator(tmp_path / "ours", norm_position)
    assert main(["export", "--model", str(model_dir), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [architecture]
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert type(hf).__name__ == architecture
    ours = load_translator(model_dir)
    sources = ours.encode_sources(SENTENCES)  # ids + EOS, as the exported tokenizer gives them
    assert tokenizer(SENTENCES).input_ids == sources
    width = max(map(len, sources))
    src = torch.tensor([row + [0] * (width - len(row)) for row in sources])  # a padded batch
    tgt = torch.tensor([[1] + row[:4] + [0] * (4 - len(row[:4])) for row in sources])
    with torch.no_grad():
        expected = ours.model(src, tgt)
        logits = hf(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt, decoder_attention_mask=tgt != 0).logits
    real = tgt != 0
    torch.testing.assert_close(logits[real], expected[real], atol=1e-4, rtol=0)
    for beam in (1, 4):
        mine = Translator(ours.model, ours.tokenizer, replace(ours.generation, beam=beam)).translate(SENTENCES)
        theirs = []
        for ids in sources:  # our length limit: source + max_length_offset tokens, EOS included
            limit = len(ids) + ours.generation.max_length_offset
            out = hf.generate(torch.tensor([ids]), num_beams=beam, length_penalty=0.0, early_stopping=True,
                              max_length=limit + 1, do_sample=False)
            theirs.append(tokenizer.decode(out[0], skip_special_tokens=True))
        assert theirs == mine
    # as a new user calls it (transformers 5 has no translation pipeline): a padded batch, the
    # exported generation_config.json's defaults (beam 4, forced EOS), decoded without specials
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    assert hf.generation_config.num_beams == 4
    generated = tokenizer.batch_decode(hf.generate(**batch, length_penalty=0.0, max_new_tokens=20),
                                       skip_special_tokens=True)
    assert generated == Translator(ours.model, ours.tokenizer, ours.generation).translate(SENTENCES)


@pytest.mark.parametrize("changes, blocker", [
    ({"positional": "rotary"}, "positional='rotary'"),
    ({"copy_attention": True}, "copy_attention"),
    ({"tgt_vocab_size": 70, "tie_embeddings": False}, "tgt_vocab_size (separate vocabularies)"),
    ({"d_k": 16, "d_v": 16}, "d_k / d_v"),
])
def test_options_without_a_hugging_face_equivalent_are_named_and_nothing_is_written(
        changes: dict, blocker: str, tmp_path: Path) -> None:
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=60, **changes))
    tokenizer = SubwordTokenizer.train(TEXTS, vocab_size=60)
    with pytest.raises(CheckpointError, match=r"cannot export to Hugging Face \(marian/MarianMTModel\): .*"
                                              + blocker.replace("(", r"\(").replace(")", r"\)")):
        save_hf_seq2seq(model, tmp_path / "hf", tokenizer, GenerationConfig())
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_a_ctranslate2_export_translates_as_we_do(norm_position: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    model_dir = trained_translator(tmp_path / "ours", norm_position)
    ours = load_translator(model_dir)
    for quantize in ("float32", "int8"):
        out = tmp_path / f"ct2-{quantize}"
        assert main(["export", "--model", str(model_dir), "--format", "ctranslate2", "--quantize", quantize,
                     "--out", str(out)]) == 0
        translator = ctranslate2.Translator(str(out), device="cpu")
        exported = SubwordTokenizer.load(out / "tokenizer.json")  # appends </s>, as our translator does
        sources = [exported.tokens(ids) for ids in exported.encode(SENTENCES, add_special_tokens=True)]
        assert [exported.tokens(ids) for ids in ours.encode_sources(SENTENCES)] == sources
        for beam in (1, 4):
            results = translator.translate_batch(sources, beam_size=beam, length_penalty=0.0,
                                                 max_decoding_length=ours.generation.max_length_offset)
            theirs = [ours.tokenizer.decode([[exported.tokenizer.token_to_id(t) for t in r.hypotheses[0]]])[0]
                      for r in results]
            mine = Translator(ours.model, ours.tokenizer, replace(ours.generation, beam=beam)).translate(SENTENCES)
            if quantize == "float32":
                assert theirs == mine
            else:  # int8 weights: most outputs the same on this tiny model
                assert sum(a == b for a, b in zip(theirs, mine)) >= len(SENTENCES) - 1
    assert "int8 weights" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES[:3] + ["", SENTENCES[3]]) + "\n", encoding="utf-8")
    printed = []
    for backend, model in (("transformerkit", model_dir), ("ctranslate2", tmp_path / "ct2-float32")):
        assert main(["translate", "--model", str(model), "--backend", backend, "--beam", "4", "--length-penalty", "0",
                     "--input", str(tmp_path / "in.txt")]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and printed[0].splitlines()[3] == ""  # a blank line stays blank
    assert main(["translate", "--model", str(model_dir), "--backend", "ctranslate2"]) == 2
    assert "not a CTranslate2 export (no model.bin" in capsys.readouterr().err

    assert main(["generate", "--model", str(tmp_path / "ct2-float32"), "--backend", "ctranslate2"]) == 2
    assert ("a CTranslate2 export of a translation model, not of a language-modeling model"
            in capsys.readouterr().err)


def test_int8_decoding_quantizes_every_linear_layer_and_keeps_the_translations(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = trained_translator(tmp_path / "ours", "pre")
    fp32, int8 = load_translator(model_dir, beam=1), load_translator(model_dir, beam=1, dtype="int8")
    assert not any(type(m) is torch.nn.Linear for m in int8.model.modules())
    linear = sum(type(m) is torch.nn.Linear for m in load_model_dir(model_dir)[0].modules())
    assert sum(type(m).__name__ == "Linear" and "quantized" in type(m).__module__ for m in int8.model.modules()) == linear
    same = sum(a == b for a, b in zip(int8.translate(SENTENCES), fp32.translate(SENTENCES)))
    assert same >= len(SENTENCES) - 1
    assert main(["translate", "--model", str(model_dir), "--backend", "ctranslate2", "--dtype", "int8"]) == 2
    assert "--dtype applies to --backend transformerkit" in capsys.readouterr().err
