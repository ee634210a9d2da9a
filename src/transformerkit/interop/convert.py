"""``transformerkit convert``: a Hugging Face checkpoint directory into a transformerkit model
directory (GPT-2, BERT, ViT), or a transformerkit model back into Hugging Face's layout.

The direction follows the input's ``config.json``: a Hugging Face ``model_type`` (``gpt2``,
``bert``, ``vit``) is imported, a transformerkit one exported. Errors are ``ValueError``s that
name the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformerkit.checkpoint import load_model_dir, save_model_dir
from transformerkit.data.image_processing import PREPROCESSOR_CONFIG, ImageProcessor
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.interop import bert, gpt2, vit
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.vision import VisionTransformer

IMPORTERS = {"gpt2": (gpt2.load_hf_gpt2, GenerationConfig(do_sample=True, top_k=50)),
             "bert": (bert.load_hf_bert, GenerationConfig()), "vit": (vit.load_hf_vit, GenerationConfig())}
"""Hugging Face ``model_type`` → (its importer, the decoding defaults saved with the model)."""
EXPORTERS = {DecoderOnlyTransformer.model_type: gpt2.save_hf_gpt2, EncoderOnlyTransformer.model_type: bert.save_hf_bert,
             VisionTransformer.model_type: vit.save_hf_vit}


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
        else:
            preprocessor = SubwordTokenizer.from_directory(tokenizer or source)
            if preprocessor.vocab_size != model.config.vocab_size:
                raise ValueError(f"the tokenizer has {preprocessor.vocab_size} tokens, the model "
                                 f"{model.config.vocab_size}")
        save_model_dir(output, model, preprocessor, generation)
        return (f"imported Hugging Face {model_type} ({sum(p.numel() for p in model.parameters()):,} parameters) "
                f"into {output}")
    if model_type in EXPORTERS:
        model, preprocessor, _ = load_model_dir(source)
        if tokenizer:
            preprocessor = SubwordTokenizer.from_directory(tokenizer)
        EXPORTERS[model_type](model, output, preprocessor)
        return f"exported to {output} (loadable with transformers' from_pretrained)"
    raise ValueError(f"{config_path}: model_type {model_type!r} cannot be converted; supported: "
                     f"{', '.join(map(repr, IMPORTERS))} (import), {', '.join(map(repr, EXPORTERS))} (export)")
