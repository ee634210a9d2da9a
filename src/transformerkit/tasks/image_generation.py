"""Training a class-conditional image generator: a decoder-only Transformer over pixel tokens
(:class:`ImageGenerationTask`), trained to maximize log p(x | c) = Σ_t log p(x_t | c, x_<t);
sampling and measuring it is :mod:`transformerkit.inference.image_generation`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformerkit.config import DecoderOnlyConfig
from transformerkit.data.batching import epoch_random
from transformerkit.data.image_processing import PixelTokenizer
from transformerkit.data.images import DataError, image_splits
from transformerkit.inference.image_generation import bits_per_pixel, pixel_nll
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.tasks.images import ImageData
from transformerkit.training.recipe import RunConfig
from transformerkit.training.task import ScoredBySplit


@dataclass
class ImageGenerationData(ImageData):
    image_size: int = 14
    """Generated images are image_size × image_size (the data is area-downsampled to it)."""
    levels: int = 4
    """Grey levels per pixel (the model's pixel vocabulary)."""

    def validate(self, run: RunConfig[Any]) -> None:
        super().validate(run)
        if self.image_size < 1 or not 2 <= self.levels <= 256:
            raise ValueError(f"data.image_size must be positive and data.levels in [2, 256], got "
                             f"{self.image_size} and {self.levels}")


@dataclass
class PixelBatch:
    sequences: Tensor
    """(batch, 1 + S²): the class token, then the pixels."""

    @property
    def tokens(self) -> int:
        return self.sequences.numel() - len(self.sequences)  # the loss sums over pixels


class ImageGenerationTask(ScoredBySplit):
    """Labeled grayscale images → pixel sequences → a decoder-only model; validation bits per pixel."""

    def __init__(self, run: ImageGenerationRun, out: Path, resume: bool, device: torch.device) -> None:
        self.run, self.device = run, device
        d = run.data
        splits = image_splits(d.train, d.test, d.valid_percent, d.test_percent, d.image_size)
        if splits["train"].images.shape[1] != 1:
            raise DataError(f"{d.train}: image generation takes grayscale images, these have "
                            f"{splits['train'].images.shape[1]} channels")
        self.tokenizer = PixelTokenizer(d.image_size, d.levels, splits["train"].classes)
        self.sequences = {name: self.tokenizer.encode(images.images, images.labels) for name, images in splits.items()}
        t = self.tokenizer
        config = run.model.replace(vocab_size=t.vocab_size, max_positions=1 + t.pixels,
                                   pad_id=0, bos_id=t.levels, eos_id=0)
        self.model = DecoderOnlyTransformer(config).to(device)
        self.generation = run.decoding
        self.has_validation = len(self.sequences["valid"]) > 0
        self.data_report = {f"{name}_images": len(images) for name, images in splits.items()} | {
            "classes": len(t.labels), "pixels": t.pixels, "levels": t.levels}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.sequences["train"])))
        epoch_random(self.run.training.seed, epoch).shuffle(order)
        size = self.run.data.batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]

    def prepare(self, batch: list[int]) -> PixelBatch:
        return PixelBatch(self.sequences["train"][torch.tensor(batch)].to(self.device))

    def loss(self, batch: PixelBatch) -> Tensor:
        return pixel_nll(self.model, batch.sequences, self.tokenizer.levels, self.model.config.label_smoothing)

    @torch.no_grad()
    def evaluate(self, split: str, autocast: AbstractContextManager[Any]) -> dict[str, float]:
        """Negative log-likelihood on ``split``: nats and bits per pixel."""
        return bits_per_pixel(self.model, self.tokenizer, self.sequences[split], self.run.data.batch_size, autocast)


@dataclass
class ImageGenerationRun(RunConfig[ImageGenerationData]):
    """A class-conditional autoregressive image model: a decoder-only Transformer over pixel tokens."""

    data: ImageGenerationData = field(default_factory=ImageGenerationData)
    model: DecoderOnlyConfig = field(default_factory=DecoderOnlyConfig)
    task_class = ImageGenerationTask
