"""Encoder-decoder models → CTranslate2 (``transformerkit export --format ctranslate2``), the
engine users deploy translation models with on CPUs, optionally quantized (int8, int16, bf16).

The model goes through its Hugging Face export (:mod:`transformerkit.interop.seq2seq`: Marian's
post-norm or Pegasus' pre-norm layout, model dimensions already in their sinusoid order), then
CTranslate2's own loader for that family of layouts (``BartLoader``) builds the model spec from
those weights. CTranslate2's Marian and Pegasus loaders cannot be used as they are: they assume
the OPUS-MT and Pegasus conventions of starting the decoder from the padding token (Marian from a
zero vector), where ours starts from BOS — the loader here takes the start token from the exported
``decoder_start_token_id`` instead. The directory holds CTranslate2's ``model.bin``,
``config.json`` and vocabulary, our ``tokenizer.json`` (which appends ``</s>`` to a source) and
``generation_config.json`` (the decoding defaults): ``transformerkit translate --backend
ctranslate2 --model DIR`` translates with it
(:class:`~transformerkit.inference.translation.CTranslate2Translator`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformerkit.checkpoint import atomic_directory
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.interop.seq2seq import save_hf_seq2seq, seq2seq_tokenizer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

QUANTIZATIONS = ("int8", "int16", "bfloat16", "float32")
"""Weight types of an export (CTranslate2's ``quantization`` names; bf16 is ``bfloat16``)."""


def ctranslate2_module() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise ValueError("exporting to CTranslate2 needs its package: pip install ctranslate2") from None
    return ctranslate2


def save_ctranslate2(model: EncoderDecoderTransformer, directory: str | Path, tokenizer: SubwordTokenizer,
                     generation: GenerationConfig, quantization: str = "float32") -> None:
    """Write ``model`` as a CTranslate2 directory, its weights stored as ``quantization``,
    atomically; options the export cannot represent are named before anything is written."""
    ctranslate2_module()
    import transformers
    from ctranslate2.converters.converter import Converter
    from ctranslate2.converters.transformers import BartLoader

    class Loader(BartLoader):
        """CTranslate2's loader of BART-shaped models, told our layout; the decoder starts from
        the exported ``decoder_start_token_id`` (BartLoader's own ``set_config``)."""

        def get_model_spec(self, hf_model: Any) -> Any:
            hf_model.config.normalize_before = model.config.norm_position == "pre"
            hf_model.config.normalize_embedding = False  # no LayerNorm over the embeddings
            return super().get_model_spec(hf_model)

    class FromHuggingFace(Converter):
        def __init__(self, hf_directory: Path) -> None:
            self.hf_directory = hf_directory

        def _load(self) -> Any:
            hf_model = transformers.AutoModelForSeq2SeqLM.from_pretrained(self.hf_directory)
            return Loader()(hf_model, transformers.AutoTokenizer.from_pretrained(self.hf_directory))

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    with tempfile.TemporaryDirectory() as scratch, atomic_directory(Path(directory)) as tmp:
        save_hf_seq2seq(model, Path(scratch) / "hf", tokenizer, generation)
        FromHuggingFace(Path(scratch) / "hf").convert(str(tmp), quantization=quantization, force=True)
        seq2seq_tokenizer(tokenizer).save(tmp / "tokenizer.json")
        (tmp / "generation_config.json").write_text(json.dumps(asdict(generation), indent=2) + "\n",
                                                    encoding="utf-8")  # our decoding defaults, for --backend ctranslate2
