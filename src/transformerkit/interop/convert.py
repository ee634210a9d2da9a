"""``transformerkit convert``: a Hugging Face checkpoint directory into a transformerkit model
directory (GPT-2, BERT, ViT), or a transformerkit model back into Hugging Face's layout; and
``transformerkit export``: a transformerkit model into the format of an engine (``hf``:
``transformers``; ``ctranslate2``: CTranslate2; ``onnx``: ONNX Runtime; the last two optionally
quantized).

The direction follows the input's ``config.json``: a Hugging Face ``model_type`` (``gpt2``,
``bert``, ``vit``) is imported, a transformerkit one exported. Errors are ``ValueError``s that
name the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformerkit.checkpoint import load_model_dir, read_model_config, save_model_dir
from transformerkit.data.image_processing import PREPROCESSOR_CONFIG, ImageProcessor
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.interop import bert, gpt2, seq2seq, vit
from transformerkit.interop.ctranslate2 import save_ctranslate2
from transformerkit.interop.onnx import ONNX_FILE, save_onnx
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.vision import VisionTransformer

IMPORTERS = {"gpt2": (gpt2.load_hf_gpt2, GenerationConfig(do_sample=True, top_k=50)),
             "bert": (bert.load_hf_bert, GenerationConfig()), "vit": (vit.load_hf_vit, GenerationConfig())}
"""Hugging Face ``model_type`` → (its importer, the decoding defaults saved with the model)."""
Exporter = Callable[[Any, Path, Any, GenerationConfig], None]
EXPORTERS: dict[str, Exporter] = {
    DecoderOnlyTransformer.model_type: gpt2.save_hf_gpt2,  # its sampling defaults go along
    EncoderOnlyTransformer.model_type: lambda model, out, tokenizer, _: bert.save_hf_bert(model, out, tokenizer),
    VisionTransformer.model_type: lambda model, out, processor, _: vit.save_hf_vit(model, out, processor),
    EncoderDecoderTransformer.model_type: seq2seq.save_hf_seq2seq,  # its beam settings go along
}
"""transformerkit ``model_type`` → its Hugging Face exporter ``(model, directory, preprocessor, decoding defaults)``."""


def convert_model_dir(source: Path, output: Path, tokenizer: str | None = None) -> str:
    """Import or export ``source`` into ``output`` (``tokenizer``: a directory holding another
    tokenizer or image processor); returns the line to tell the user."""
    config_path = source / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{source}: no config.json")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: invalid JSON ({error.msg})") from None
    if model_type in IMPORTERS:
        load, generation = IMPORTERS[model_type]
        model = load(source)
        if model_type == "vit":  # Hugging Face's image processor, else ViT's default normalization (0.5, 0.5)
            processor_path = Path(tokenizer or source) / PREPROCESSOR_CONFIG
            c = model.config
            preprocessor = (ImageProcessor.from_dict(json.loads(processor_path.read_text(encoding="utf-8")), processor_path)
                            if processor_path.is_file() else ImageProcessor(c.image_size, [0.5] * c.num_channels,
                                                                            [0.5] * c.num_channels))
            if c.num_channels == 1 and preprocessor.num_channels == 3:  # a grayscale model exported for RGB
                preprocessor = ImageProcessor(c.image_size, preprocessor.image_mean[:1], preprocessor.image_std[:1])
        else:
            preprocessor = SubwordTokenizer.from_directory(tokenizer or source)
            if preprocessor.vocab_size != model.config.vocab_size:
                raise ValueError(f"the tokenizer has {preprocessor.vocab_size} tokens, the model "
                                 f"{model.config.vocab_size}")
        save_model_dir(output, model, preprocessor, generation)
        return (f"imported Hugging Face {model_type} ({sum(p.numel() for p in model.parameters()):,} parameters) "
                f"into {output}")
    if model_type in EXPORTERS:
        return export_model_dir(source, output, tokenizer)
    raise ValueError(f"{config_path}: model_type {model_type!r} cannot be converted; supported: "
                     f"{', '.join(map(repr, IMPORTERS))} (import), {', '.join(map(repr, EXPORTERS))} (export)")


def export_model_dir(source: Path, output: Path, tokenizer: str | None = None, engine: str = "hf",
                     quantize: str = "float32") -> str:
    """Write transformerkit model directory ``source`` for ``engine`` into ``output``: ``hf``
    (``tokenizer``: a directory holding another tokenizer), ``ctranslate2`` or ``onnx`` (weights
    stored as ``quantize``); returns the line to tell the user."""
    model, preprocessor, generation = load_model_dir(source)
    if tokenizer:
        preprocessor = SubwordTokenizer.from_directory(tokenizer)
    if engine == "onnx":
        save_onnx(model, output, preprocessor, generation, quantize)
        told = f"exported to {output} ({quantize} weights; run {ONNX_FILE} with onnxruntime.InferenceSession)"
    elif engine == "ctranslate2":
        if not isinstance(preprocessor, SubwordTokenizer):
            raise ValueError(f"{source}: a {model.model_type} model has no CTranslate2 export (text models do)")
        save_ctranslate2(model, output, preprocessor, generation, read_model_config(source).task, quantize)
        told = f"exported to {output} ({quantize} weights; run it with --backend ctranslate2)"
    else:
        if quantize != "float32":
            raise ValueError("--quantize applies to --format ctranslate2")
        if model.model_type not in EXPORTERS:
            raise ValueError(f"{source}: a {model.model_type} model has no Hugging Face export")
        EXPORTERS[model.model_type](model, output, preprocessor, generation)
        told = f"exported to {output} (loadable with transformers' from_pretrained)"
    card = source / "README.md"
    if card.is_file():  # the model card goes along, saying what the export is
        (output / "README.md").write_text(card.read_text(encoding="utf-8") + f"\n## This export\n\n`transformerkit "
                                          f"export --format {engine}` of `{source}` ({quantize} weights).\n",
                                          encoding="utf-8")
    return told
