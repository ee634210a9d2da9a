"""``transformerkit explain``: one real forward pass of a trained model on the user's own input,
walked step by step in the paper's order — tokenization, input embedding, positional encoding,
each layer's multi-head attention, residual + LayerNorm and feed-forward network, the output —
with the formulas and the real numbers, in English or Chinese, as text, Markdown or one HTML file.

The explanation cannot lie: each number is recomputed from its formula with plain tensor
operations (:mod:`.formulas`) and compared with the value the model computed itself, captured with
forward hooks (:mod:`.recording`); a difference beyond 1e-5 · (1 + |value|) stops the command.

This package stands on ``inference`` (a translation model explains its own translation) and the
model families; it never imports training.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError
from transformerkit.data.image_processing import ImageProcessor
from transformerkit.data.images import read_image
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.explain.language import LANGUAGES, Language
from transformerkit.explain.render import FORMATS, Format, render
from transformerkit.explain.walk import (Explanation, Focus, Step, Walk, explanation, make_walk, walk_encoder,
                                         walk_language_model, walk_translation, walk_vision)
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.translation import Translator
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.families import Model
from transformerkit.models.vision import VisionTransformer

MAX_TOKENS = 128
"""The longest input explained: every layer prints a row per key, and the work is bounded."""


def _text(text: str | None, image: str | None, model: Model) -> str:
    if image is not None or text is None:
        raise UsageError(f"a {model.config.family} model explains a text: give --text (not --image)")
    if not text.strip():
        raise UsageError("--text is empty")
    return text


def _bounded(ids: list[int]) -> list[int]:
    if len(ids) > MAX_TOKENS:
        raise UsageError(f"explain walks inputs of up to {MAX_TOKENS} tokens, this one has {len(ids)}: "
                         "give a shorter --text")
    return ids


def _tokenizer(preprocessor: Any, model_dir: Path) -> SubwordTokenizer:
    if not isinstance(preprocessor, SubwordTokenizer):
        raise UsageError(f"{model_dir}: explain reads text through a tokenizer; this model reads "
                         f"{type(preprocessor).__name__} inputs (pixel levels of an image generator)")
    return preprocessor


def explain_translation(walk: Walk, model: EncoderDecoderTransformer, preprocessor: Any,
                        generation: GenerationConfig, model_dir: Path, text: str | None, image: str | None
                        ) -> list[Step]:
    tokenizer = _tokenizer(preprocessor, model_dir)
    text = _text(text, image, model)
    translator = Translator(model, tokenizer, generation)
    source_ids = _bounded(translator.encode_sources([text])[0])
    translation = translator.translate([text])[0]
    target_ids = _bounded(tokenizer.encode([translation])[0] + [tokenizer.eos_id])
    return walk_translation(walk, model, tokenizer, text, source_ids, target_ids, translation, generation.beam)


def explain_language_model(walk: Walk, model: DecoderOnlyTransformer, preprocessor: Any,
                           generation: GenerationConfig, model_dir: Path, text: str | None, image: str | None
                           ) -> list[Step]:
    tokenizer = _tokenizer(preprocessor, model_dir)
    text = _text(text, image, model)
    ids = _bounded(tokenizer.encode([text])[0])
    if not ids:
        raise UsageError(f"--text {text!r} has no tokens in this model's vocabulary")
    if model.config.positional == "learned" and len(ids) > model.config.max_positions:
        raise UsageError(f"--text has {len(ids)} tokens, the model reads at most {model.config.max_positions}")
    return walk_language_model(walk, model, tokenizer, text, ids)


def explain_encoder(walk: Walk, model: EncoderOnlyTransformer, preprocessor: Any, generation: GenerationConfig,
                    model_dir: Path, text: str | None, image: str | None) -> list[Step]:
    tokenizer = _tokenizer(preprocessor, model_dir)
    text = _text(text, image, model)
    ids = _bounded(tokenizer.encode_for_encoder([text], model.config.max_positions)[0])
    return walk_encoder(walk, model, tokenizer, text, ids)


def explain_image(walk: Walk, model: VisionTransformer, preprocessor: Any, generation: GenerationConfig,
                  model_dir: Path, text: str | None, image: str | None) -> list[Step]:
    if image is None or text is not None:
        raise UsageError("a vision model explains an image: give --image FILE (not --text)")
    if not isinstance(preprocessor, ImageProcessor):
        raise CheckpointError(f"{model_dir}: a vision model needs its image processor (preprocessor_config.json)")
    pixels = read_image(Path(image), model.config.num_channels, model.config.image_size)
    return walk_vision(walk, model, preprocessor(pixels[None]), Path(image).name)


FAMILY_WALKS: dict[type[Model], tuple[str, Callable[..., list[Step]]]] = {
    EncoderDecoderTransformer: ("encoder_decoder", explain_translation),
    DecoderOnlyTransformer: ("decoder_only", explain_language_model),
    EncoderOnlyTransformer: ("encoder_only", explain_encoder),
    VisionTransformer: ("vision", explain_image),
}
"""Model class → (its family's name in the messages, the walk that reads its input)."""


def explain_model(model: Model, preprocessor: Any, generation: GenerationConfig, name: str,
                  text: str | None = None, image: str | None = None, language: Language = "en",
                  focus: Focus = Focus(), model_dir: Path = Path(".")) -> Explanation:
    """Walk one forward pass of ``model`` (fp32, any family) on ``text`` or the ``image`` file."""
    if language not in LANGUAGES:
        raise UsageError(f"--lang must be one of {', '.join(LANGUAGES)}, got {language!r}")
    if type(model) not in FAMILY_WALKS:
        families = ", ".join(cls.config_class.family for cls in FAMILY_WALKS)
        raise UsageError(f"explain walks the Transformer's families ({families}), not a {model.config.family} model")
    family, walk_family = FAMILY_WALKS[type(model)]
    kernel, training = model.config.attention_kernel, model.training
    walk = make_walk(model, language, focus)  # evaluation mode, the formula's attention kernel
    try:
        with torch.no_grad():
            steps = walk_family(walk, model, preprocessor, generation, model_dir, text, image)
    finally:  # the caller's model as it was
        model.set_attention_kernel(kernel)
        model.train(training)
    return explanation(model, walk, steps, name, family)


def explain_model_dir(model_dir: str | Path, text: str | None = None, image: str | None = None,
                      language: Language = "en", focus: Focus = Focus()) -> Explanation:
    """:func:`explain_model` for a saved model directory (loaded in fp32 on the CPU)."""
    path = Path(model_dir)
    model, preprocessor, generation = load_model_dir(path, "cpu")
    resolved = path.resolve()
    name = f"{resolved.parent.name}/{resolved.name}" if resolved.name == "model" else resolved.name
    return explain_model(model, preprocessor, generation, name, text, image, language, focus, path)


def add_commands(commands: Commands) -> None:
    command = commands.add_parser(
        "explain", help="walk one forward pass of a model on your input, step by step: tokens, embeddings, "
                        "positional encoding, each layer's attention, LayerNorm and feed-forward network, the "
                        "output — formulas and real numbers, each checked against the model's own")
    command.add_argument("--model", required=True, help="model directory (any family)")
    command.add_argument("--text", default=None, help="the input text (translation, language, text-encoder models)")
    command.add_argument("--image", default=None, help="the input image file (vision models)")
    command.add_argument("--lang", choices=list(LANGUAGES), default="en", help="language of the explanation: "
                         "en (English) or zh (中文)")
    command.add_argument("--format", choices=list(FORMATS), default="text",
                         help="text (terminal), markdown, or html (one self-contained file with heatmaps)")
    command.add_argument("--out", "--output", dest="out", default=None, help="write this file instead of stdout")
    command.add_argument("--layer", type=int, default=None,
                         help="detail only this layer (0-based; negative from the last; default: every layer)")
    command.add_argument("--head", type=int, default=0, help="the attention head whose numbers are shown (0-based)")
    command.add_argument("--position", type=int, default=None, help="the token whose computation is shown "
                         "(0-based; negative from the end; default: the last token of a decoder, the first "
                         "word of an encoder)")
    command.set_defaults(handler=explain_command)


def explain_command(args: Any) -> int:
    if args.out is not None and Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a directory")
    walked = explain_model_dir(args.model, args.text, args.image, args.lang,
                               Focus(layer=args.layer, head=args.head, position=args.position))
    page = render(walked, args.format)
    if args.out is None:
        sys.stdout.write(page)
    else:
        Path(args.out).write_text(page, encoding="utf-8")
        worst = max((c.max_error for c in walked.checks), default=0.0)
        print(f"explanation written to {args.out} ({len(walked.checks)} checks passed, largest difference "
              f"{worst:.1e})", file=sys.stderr)
    return 0


__all__ = ["Explanation", "Focus", "add_commands", "explain_model", "explain_model_dir", "render", "Format"]
