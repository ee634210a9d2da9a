"""ONNX exports (``transformerkit export --format onnx``) run on ONNX Runtime and give our outputs:
encoders (BERT family with each head, ViT) on padded batches, the decoder-only model step by
step with its key/value cache; int8 weights stay close; errors name what blocks an export."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest
import torch

from transformerkit.checkpoint import save_model_dir
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.image_processing import ImageProcessor
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.language_modeling import TextGenerator
from transformerkit.interop.onnx import ONNX_FILE, OnnxLanguageModel, save_onnx
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.vision import VisionTransformer
from transformerkit.training.task import model_config_for

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = ["open the file and save it", "delete this folder now", "print the new image", "close the window"] * 4


@pytest.fixture(scope="module")
def tokenizer() -> SubwordTokenizer:
    return SubwordTokenizer.train(TEXTS, vocab_size=80)


def run(directory: Path, **inputs: torch.Tensor) -> dict[str, numpy.ndarray]:
    session = ort.InferenceSession(str(directory / ONNX_FILE), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {k: v.numpy() for k, v in inputs.items()})))


def padded_batch(tokenizer: SubwordTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer.encode([t], add_special_tokens=True)[0] for t in ("open the file", "delete this folder now",
                                                                        "print")]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in rows])
    return ids, (ids != tokenizer.pad_id).long()


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_encoder_only_export_gives_our_outputs_on_a_padded_batch(norm_position: str, tokenizer: SubwordTokenizer,
                                                                 tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EncoderOnlyTransformer(model_config_for(preset(
        "minilm-l6", num_encoder_layers=2, d_model=32, d_ff=64, num_heads=4, norm_position=norm_position,
        labels=["no", "yes"], masked_lm_head=True, span_head=True), tokenizer)).eval()
    save_onnx(model, tmp_path / "onnx", tokenizer, GenerationConfig())
    ids, mask = padded_batch(tokenizer)
    types = torch.zeros_like(ids)
    outputs = run(tmp_path / "onnx", input_ids=ids, attention_mask=mask, token_type_ids=types)
    with torch.no_grad():
        hidden, _ = model(ids, mask, types)
        start, end = model.span_logits(ids, mask, types)
        expected = {"last_hidden_state": hidden, "pooler_output": model.pooled(hidden),
                    "logits": model.classify(ids, mask, types), "start_logits": start, "end_logits": end,
                    "prediction_logits": model.masked_lm_logits(ids, mask, types)}
    assert list(outputs) == list(expected)
    real = mask.bool()
    for name, value in expected.items():  # the padding positions' states are not outputs anyone reads
        got = torch.from_numpy(outputs[name])
        if name in ("last_hidden_state", "prediction_logits", "start_logits", "end_logits"):
            got, value = got[real], value[real]
        torch.testing.assert_close(got, value, atol=1e-4, rtol=0, msg=name)
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()


def test_vision_export_gives_our_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(preset("vit-tiny-16", num_encoder_layers=2, d_model=32, d_ff=64, num_heads=4,
                                     image_size=16, patch_size=4, num_channels=1, labels=["a", "b", "c"])).eval()
    save_onnx(model, tmp_path / "onnx", ImageProcessor(16, [0.5], [0.5]), GenerationConfig())
    images = torch.randn(3, 1, 16, 16)
    outputs = run(tmp_path / "onnx", pixel_values=images)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(outputs["logits"]), model.classify(images), atol=1e-4, rtol=0)
    assert (tmp_path / "onnx" / "preprocessor_config.json").is_file()


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_decoder_only_export_steps_with_its_cache_as_our_model(positional: str, tokenizer: SubwordTokenizer,
                                                               tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny", positional=positional, dropout=0.0,
                                                           attention_dropout=0.0), tokenizer)).eval()
    save_onnx(model, tmp_path / "onnx", tokenizer, GenerationConfig())
    onnx_model = OnnxLanguageModel(tmp_path / "onnx")
    ids, mask = padded_batch(tokenizer)
    ids = ids.flip(1)  # left padding, as prompts are batched
    mask = mask.flip(1)
    with torch.no_grad():
        full = model.logits(model.hidden_states(torch.cat([ids, ids[:, :2]], dim=1),
                                                torch.cat([mask, torch.ones(3, 2, dtype=torch.long)], dim=1))[0])
    logits, past = onnx_model.step(ids, mask, None)  # the prompt, then two tokens one at a time
    steps = [logits]
    for i in range(2):
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
        logits, past = onnx_model.step(ids[:, i:i + 1], mask, past)
        steps.append(logits)
    real = torch.cat([mask[:, :ids.shape[1]], torch.ones(3, 2, dtype=torch.long)], dim=1).bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-4, rtol=0)
    assert past[0].shape[2] == ids.shape[1] + 2


def test_onnx_greedy_decoding_continues_prompts_as_we_do(tokenizer: SubwordTokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny", dropout=0.0, attention_dropout=0.0),
                                                    tokenizer)).eval()
    generation = GenerationConfig(do_sample=False, max_new_tokens=6)
    save_model_dir(tmp_path / "model", model, tokenizer, generation)
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    prompts = ["open the", "delete"]
    ours = TextGenerator(model, tokenizer, generation).generate(prompts)
    rows = [tokenizer.encode([p])[0] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_id] * (width - len(r)) + r for r in rows])
    tokens = OnnxLanguageModel(tmp_path / "onnx").greedy(ids, (ids != tokenizer.pad_id).long(), 6)
    assert [tokenizer.decode([row])[0] for row in tokens.tolist()] == ours


def test_int8_export_is_smaller_and_close(tokenizer: SubwordTokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EncoderOnlyTransformer(model_config_for(preset("minilm-l6", num_encoder_layers=2, d_model=64, d_ff=256,
                                                           num_heads=4), tokenizer)).eval()
    save_onnx(model, tmp_path / "fp32", tokenizer, GenerationConfig())
    save_onnx(model, tmp_path / "int8", tokenizer, GenerationConfig(), "int8")
    assert (tmp_path / "int8" / ONNX_FILE).stat().st_size < 0.6 * (tmp_path / "fp32" / ONNX_FILE).stat().st_size
    ids, mask = padded_batch(tokenizer)
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    exact = torch.from_numpy(run(tmp_path / "fp32", **inputs)["last_hidden_state"])
    quantized = torch.from_numpy(run(tmp_path / "int8", **inputs)["last_hidden_state"])
    real = mask.bool()
    cosine = torch.nn.functional.cosine_similarity(exact[real], quantized[real], dim=-1)
    assert float(cosine.min()) > 0.99


def test_onnx_export_errors_are_one_line(tokenizer: SubwordTokenizer, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

    model = EncoderDecoderTransformer(model_config_for(preset("tiny"), tokenizer))
    save_model_dir(tmp_path / "seq2seq", model, tokenizer, GenerationConfig())
    assert main(["export", "--model", str(tmp_path / "seq2seq"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "has no ONNX export (encoder-only, vision and decoder-only models do)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="--quantize for ONNX must be one of float32, int8, got 'int16'"):
        save_onnx(model, tmp_path / "o", tokenizer, GenerationConfig(), "int16")


def test_a_missing_engine_names_the_package_to_install(tokenizer: SubwordTokenizer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny"), tokenizer))
    save_model_dir(tmp_path / "model", model, tokenizer, GenerationConfig())
    for module, fmt, package in (("onnxscript", "onnx", "pip install onnx onnxscript"),
                                 ("ctranslate2", "ctranslate2", "pip install ctranslate2")):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
        assert main(["export", "--model", str(tmp_path / "model"), "--format", fmt, "--out", str(tmp_path / fmt)]) == 2
        assert package in capsys.readouterr().err
        assert not (tmp_path / fmt).exists()
    assert main(["generate", "--model", str(tmp_path / "model"), "--backend", "ctranslate2"]) == 2
    assert "not a CTranslate2 export" in capsys.readouterr().err
