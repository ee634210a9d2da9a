"""Class-conditional image generation with a decoder-only Transformer over pixel tokens: sampling
(:class:`ImageGenerator`), the likelihood (bits per pixel) and the class consistency of samples,
and the ``generate-images`` verb.

An image is a sequence (:class:`~transformerkit.data.image_processing.PixelTokenizer`): its class
token, then its S² grey levels in raster order. The model is trained to predict each pixel from
the class and the pixels before it,

    log p(x | c) = Σ_t log p(x_t | c, x_<t),   bits per pixel = −log₂ p(x | c) / S²,

with the next-token distribution restricted to the grey levels. Sampling is the language models'
loop (:func:`~transformerkit.generation.sampling.generate_tokens`: temperature, top-k, top-p,
KV cache) started from the class token.
"""

from __future__ import annotations

import math
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.backends.calibration import use_decoding_layout_where_faster
from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError
from transformerkit.data.image_processing import PixelTokenizer
from transformerkit.data.images import ImageSet, image_splits, save_image_grid
from transformerkit.devices import model_device, pick_device
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.decoders import CausalLMDecoder, VocabularyPrefix
from transformerkit.generation.sampling import TokenChooser, generate_tokens
from transformerkit.inference.image_classification import load_image_classifier
from transformerkit.models.decoder_only import DecoderOnlyTransformer


def pixel_nll(model: DecoderOnlyTransformer, sequences: Tensor, levels: int, label_smoothing: float = 0.0) -> Tensor:
    """−log p(pixel | class, earlier pixels) in nats, summed: sequences (batch, 1 + S²) → scalar.
    The distribution is over the grey levels only (the first ``levels`` logits)."""
    logits = model(sequences[:, :-1])[..., :levels]
    return F.cross_entropy(logits.flatten(0, 1).float(), sequences[:, 1:].flatten(), reduction="sum",
                           label_smoothing=label_smoothing)


@torch.no_grad()
def bits_per_pixel(model: DecoderOnlyTransformer, tokenizer: PixelTokenizer, sequences: Tensor, batch_size: int,
                   autocast: AbstractContextManager[Any]) -> dict[str, float]:
    """``loss`` (nats per pixel) and ``bits_per_pixel`` of sequences (N, 1 + S²)."""
    device = model_device(model)
    total = 0.0
    for start in range(0, len(sequences), batch_size):
        with autocast:
            total += pixel_nll(model, sequences[start:start + batch_size].to(device), tokenizer.levels).item()
    nats = total / max(sequences.numel() - len(sequences), 1)
    return {"loss": nats, "bits_per_pixel": nats / math.log(2)}


@dataclass
class ImageGenerator:
    """Class indices in, sampled images out (batched, with a key/value cache). One random stream
    (seeded by ``generation.seed``) runs through all calls."""

    model: DecoderOnlyTransformer
    tokenizer: PixelTokenizer
    generation: GenerationConfig

    def __post_init__(self) -> None:
        self.chooser = TokenChooser(self.generation, model_device(self.model))

    def class_index(self, name: str) -> int:
        """A class by name or index (``"Sneaker"`` or ``"7"``); unknown ones raise ``ValueError``."""
        labels = self.tokenizer.labels
        if name in labels:
            return labels.index(name)
        if name.isdigit() and int(name) < len(labels):
            return int(name)
        raise ValueError(f"unknown class {name!r}; the model's classes: "
                         + ", ".join(f"{i} {label}" for i, label in enumerate(labels)))

    @torch.inference_mode()
    def generate(self, classes: list[int]) -> Tensor:
        """One image per class index: uint8 (len(classes), 1, S, S)."""
        device = model_device(self.model)
        t = self.tokenizer
        first = t.class_token(torch.tensor(classes, device=device))[:, None]
        decoder = CausalLMDecoder(self.model, torch.ones_like(first, dtype=torch.bool), capacity=1 + t.pixels)
        steps = generate_tokens(VocabularyPrefix(decoder, t.levels), first, t.pixels, self.chooser, eos_id=None,
                                pad_id=0)
        return t.decode(torch.stack(list(steps), dim=1).cpu())


def load_image_generator(model_dir: str | Path, device: str | None = None, **overrides: Any) -> ImageGenerator:
    """An :class:`ImageGenerator` for a model directory; ``overrides`` change its sampling settings."""
    device = pick_device(device)
    model, tokenizer, generation = load_model_dir(model_dir, device)
    if not isinstance(tokenizer, PixelTokenizer) or not isinstance(model, DecoderOnlyTransformer):
        raise CheckpointError(f"{model_dir} holds no image generation model")
    use_decoding_layout_where_faster(model, rows=(32,))  # a grid of samples at once
    generation = replace(generation, **{k: v for k, v in overrides.items() if v is not None})
    generation.validate()
    return ImageGenerator(model, tokenizer, generation)


def class_consistency(generator: ImageGenerator, classifier: Any, per_class: int, batch_size: int = 100,
                      reference: ImageSet | None = None) -> dict[str, Any]:
    """The share of generated images that ``classifier`` (an
    :class:`~transformerkit.inference.image_classification.ImageClassifier`) assigns to the class they
    were conditioned on, overall and per class; with ``reference`` (real images) also the share for
    those images after the same downsampling and quantization (the ceiling for the samples)."""
    classes = [c for c in range(len(generator.tokenizer.labels)) for _ in range(per_class)]
    predicted: list[int] = []
    for start in range(0, len(classes), batch_size):
        images = generator.generate(classes[start:start + batch_size])
        predicted += classifier.probabilities(images).argmax(-1).tolist()
    hits = [p == c for p, c in zip(predicted, classes)]
    result: dict[str, Any] = {
        "class_consistency": sum(hits) / len(hits), "samples": len(hits),
        "per_class": {label: sum(hits[i * per_class:(i + 1) * per_class]) / per_class
                      for i, label in enumerate(generator.tokenizer.labels)}}
    if reference is not None:
        t = generator.tokenizer
        quantized = t.decode(t.quantize(reference.images))
        correct = 0
        for start in range(0, len(reference), batch_size):
            guess = classifier.probabilities(quantized[start:start + batch_size]).argmax(-1).cpu()
            correct += int((guess == reference.labels[start:start + batch_size]).sum())
        result["real_quantized_consistency"] = correct / len(reference)
    return result


def add_commands(commands: Commands) -> None:
    """``generate-images``: samples of one class (or of every class) as a PNG grid."""
    command = commands.add_parser("generate-images", help="sample images of one class into a PNG grid")
    command.add_argument("--model", required=True, help="image generation model directory")
    command.add_argument("--class", dest="class_", required=True,
                         help="class index or name; all: one titled row per class")
    command.add_argument("--count", type=int, default=16, help="how many images (per class with --class all)")
    command.add_argument("--out", "--output", dest="out", required=True, help="PNG file to write")
    command.add_argument("--columns", type=int, default=8, help="images per row of the grid")
    command.add_argument("--scale", type=int, default=4, help="draw each pixel this many times larger")
    command.add_argument("--greedy", action="store_true", help="most probable grey level at every pixel")
    command.add_argument("--temperature", type=float, default=None,
                         help="divides the logits before sampling (default: the model's)")
    command.add_argument("--top-k", type=int, default=None, help="keep the k most probable levels (0: all)")
    command.add_argument("--top-p", type=float, default=None, help="nucleus: keep the top levels up to this mass")
    command.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    command.set_defaults(handler=generate_images_command)


def generate_images_command(args: Any) -> int:
    if args.count < 1:
        raise UsageError(f"--count must be positive, got {args.count}")
    generator = load_image_generator(args.model, do_sample=not args.greedy, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    labels = generator.tokenizer.labels
    if args.class_ == "all":  # one titled row of --count samples per class
        images = generator.generate([c for c in range(len(labels)) for _ in range(args.count)])
        save_image_grid(images, Path(args.out), columns=args.count, scale=args.scale, titles=labels)
        print(f"{args.count} samples of each of {len(labels)} classes written to {args.out}", file=sys.stderr)
        return 0
    label = generator.class_index(args.class_)
    images = generator.generate([label] * args.count)
    save_image_grid(images, Path(args.out), columns=min(args.columns, args.count), scale=args.scale)
    print(f"{args.count} samples of class {label} ({labels[label]}) written to {args.out}", file=sys.stderr)
    return 0


def evaluate(args: Any) -> dict[str, Any]:
    """``transformerkit evaluate`` for an image generator: bits per pixel on the test split of
    ``--data``, and with ``--classifier`` the class consistency of its samples."""
    generator = load_image_generator(args.model, do_sample=True, seed=args.seed)
    t = generator.tokenizer
    test = image_splits(args.data, None, 0.0, args.test_percent, t.image_size)["test"]
    scores: dict[str, Any] = {**bits_per_pixel(generator.model, t, t.encode(test.images, test.labels), 100,
                                               nullcontext()), "images": len(test)}
    if args.classifier:
        scores |= class_consistency(generator, load_image_classifier(args.classifier), args.samples_per_class,
                                    reference=test)
    return scores
