"""Models → CTranslate2 (``transformerkit export --format ctranslate2``), the engine users
deploy Transformers with on CPUs, optionally quantized (int8, int16, bf16): encoder-decoders
(translation, summarization), decoder-only models in GPT-2's layout and encoder-only models in
BERT's.

Each model goes through its Hugging Face export (:mod:`transformerkit.interop`: Marian's post-norm
or Pegasus' pre-norm layout with model dimensions in their sinusoid order, GPT-2, BERT), then
CTranslate2's own loader for that family builds the model spec from those weights (as its
converter does for checkpoints from the Hub). Two loaders are told our conventions: the
encoder-decoder one (``BartLoader``; CTranslate2's Marian and Pegasus loaders assume the OPUS-MT
and Pegasus habit of starting the decoder from the padding token, ours starts from BOS: the start
token is taken from the exported ``decoder_start_token_id``), and BERT's, which leaves out the
pooler of a model that has none. The directory holds CTranslate2's ``model.bin``, ``config.json``
(with our ``"transformerkit_task"`` added) and vocabulary, our ``tokenizer.json`` (an
encoder-decoder's appends ``</s>`` to a source) and ``generation_config.json`` (the decoding
defaults): ``transformerkit translate/generate/serve --backend ctranslate2 --model DIR`` use it
(:mod:`transformerkit.inference.engines`).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformerkit.checkpoint import atomic_directory
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.engines import TASK_KEY
from transformerkit.interop.bert import save_hf_bert
from transformerkit.interop.gpt2 import save_hf_gpt2
from transformerkit.interop.seq2seq import save_hf_seq2seq, seq2seq_tokenizer
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.families import Model

QUANTIZATIONS = ("int8", "int16", "bfloat16", "float32")
"""Weight types of an export (CTranslate2's ``quantization`` names; bf16 is ``bfloat16``)."""


def ctranslate2_module() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise ValueError("exporting to CTranslate2 needs its package: pip install ctranslate2") from None
    return ctranslate2


def _loader(model: Model) -> tuple[Callable[..., None], str, Any]:
    """The Hugging Face exporter of ``model``, the ``transformers`` class that reads the export
    and the CTranslate2 loader that turns that into a model spec."""
    from ctranslate2.converters.transformers import BartLoader, BertLoader, GPT2Loader

    if isinstance(model, EncoderDecoderTransformer):
        class Seq2SeqLoader(BartLoader):
            """CTranslate2's loader of BART-shaped models, told our layout; the decoder starts from
            the exported ``decoder_start_token_id`` (BartLoader's own ``set_config``)."""

            def get_model_spec(self, hf_model: Any) -> Any:
                hf_model.config.normalize_before = model.config.norm_position == "pre"
                hf_model.config.normalize_embedding = False  # no LayerNorm over the embeddings
                return super().get_model_spec(hf_model)

        return save_hf_seq2seq, "AutoModelForSeq2SeqLM", Seq2SeqLoader()
    if isinstance(model, DecoderOnlyTransformer):
        return save_hf_gpt2, "GPT2LMHeadModel", GPT2Loader()
    if isinstance(model, EncoderOnlyTransformer):
        class EncoderLoader(BertLoader):
            """CTranslate2's BERT loader, without the pooler where the model has none."""

            def get_model_spec(self, hf_model: Any) -> Any:
                spec = super().get_model_spec(hf_model)
                if model.pooler is None:  # BertModel made one up
                    del spec.pooler_dense, spec.pooler_activation
                return spec

        return (lambda m, out, tokenizer, _: save_hf_bert(m, out, tokenizer)), "BertModel", EncoderLoader()
    raise ValueError(f"a {model.model_type} model has no CTranslate2 export (encoder-decoder, decoder-only and "
                     "encoder-only models do)")


def save_ctranslate2(model: Model, directory: str | Path, tokenizer: SubwordTokenizer, generation: GenerationConfig,
                     task: str, quantization: str = "float32") -> None:
    """Write ``model`` (whose task is ``task``) as a CTranslate2 directory, its weights stored as
    ``quantization``, atomically; options the export cannot represent are named before anything
    is written."""
    ctranslate2_module()
    try:
        import transformers  # CTranslate2's loaders read a Hugging Face model object
    except ImportError:
        raise ValueError("exporting to CTranslate2 needs transformers: pip install 'transformerkit[export]'") from None
    from ctranslate2.converters.converter import Converter

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    save_hf, hf_class, loader = _loader(model)

    class FromHuggingFace(Converter):
        def __init__(self, hf_directory: Path) -> None:
            self.hf_directory = hf_directory

        def _load(self) -> Any:
            hf_model = getattr(transformers, hf_class).from_pretrained(self.hf_directory)
            return loader(hf_model, transformers.AutoTokenizer.from_pretrained(self.hf_directory))

    with tempfile.TemporaryDirectory() as scratch, atomic_directory(Path(directory)) as tmp:
        save_hf(model, Path(scratch) / "hf", tokenizer, generation)
        with warnings.catch_warnings():  # BertModel's note that it made up a pooler: the loader drops it
            warnings.simplefilter("ignore")
            FromHuggingFace(Path(scratch) / "hf").convert(str(tmp), quantization=quantization, force=True)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        if config.get("unk_token", "") is None:  # a byte-level BPE (GPT-2's) has none; CTranslate2 needs a string
            config["unk_token"] = config.get("eos_token")  # as Hugging Face's GPT-2 tokenizer names it
        (tmp / "config.json").write_text(json.dumps({**config, TASK_KEY: task}, indent=2) + "\n", encoding="utf-8")
        (seq2seq_tokenizer(tokenizer) if isinstance(model, EncoderDecoderTransformer)
         else tokenizer).save(tmp / "tokenizer.json")
        (tmp / "generation_config.json").write_text(json.dumps(asdict(generation), indent=2) + "\n",
                                                    encoding="utf-8")  # our decoding defaults, for --backend ctranslate2
