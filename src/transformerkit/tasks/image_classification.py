"""Training a vision Transformer to classify images (:class:`ImageClassificationTask`); using it
is :mod:`transformerkit.inference.image_classification`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.config import VisionConfig
from transformerkit.data.batching import epoch_random
from transformerkit.data.image_processing import ImageProcessor
from transformerkit.data.images import ImageSet, image_splits
from transformerkit.inference.classification import classification_scores
from transformerkit.models.vision import VisionTransformer
from transformerkit.tasks.images import ImageData
from transformerkit.training.recipe import RunConfig
from transformerkit.training.task import ScoredBySplit


@dataclass
class ImageClassificationData(ImageData):
    shift: int = 2
    """Augmentation: move each training image by up to this many pixels in x and y (zero-padded); 0: off."""
    flip: bool = False
    """Augmentation: mirror half the training images left-right (clothes: yes; digits: no)."""

    def validate(self, run: RunConfig[Any]) -> None:
        super().validate(run)
        if self.shift < 0:
            raise ValueError(f"data.shift must be 0 or positive, got {self.shift}")


@dataclass
class ImageBatch:
    images: Tensor
    """(batch, channels, size, size), normalized."""
    labels: Tensor
    """(batch,) class indices."""

    @property
    def tokens(self) -> int:
        return len(self.labels)  # the loss sums over images


@dataclass(frozen=True)
class Augmented:
    """One training image of a batch and its augmentation, drawn with the epoch's seed (so resume is exact)."""

    index: int
    dx: int = 0
    dy: int = 0
    flip: bool = False


def augment(images: Tensor, items: list[Augmented], shift: int) -> Tensor:
    """Shift each image by (dx, dy) pixels (zero fill) and mirror it left-right when ``flip``:
    (batch, C, H, W) → (batch, C, H, W)."""
    if shift:
        padded = F.pad(images, (shift, shift, shift, shift))
        h, w = images.shape[-2:]
        images = torch.stack([padded[i, :, shift - a.dy:shift - a.dy + h, shift - a.dx:shift - a.dx + w]
                              for i, a in enumerate(items)])
    flips = torch.tensor([a.flip for a in items])
    if flips.any():
        images = torch.where(flips[:, None, None, None], images.flip(-1), images)
    return images


class ImageClassificationTask(ScoredBySplit):
    """Labeled images → ViT with a classification head; cross-entropy; validation loss, accuracy, macro-F1."""

    def __init__(self, run: ImageClassificationRun, out: Path, resume: bool, device: torch.device) -> None:
        self.run, self.device = run, device
        d = run.data
        self.splits: dict[str, ImageSet] = image_splits(d.train, d.test, d.valid_percent, d.test_percent,
                                                        run.model.image_size)
        train = self.splits["train"]
        config = run.model.replace(labels=train.classes, num_channels=train.images.shape[1])
        self.tokenizer = ImageProcessor.fitted(train.images, config.image_size)  # mean/std of the training pixels
        self.model = VisionTransformer(config).to(device)
        self.generation = run.decoding
        self.has_validation = len(self.splits["valid"]) > 0
        self.data_report = {f"{name}_images": len(images) for name, images in self.splits.items()} | {
            "classes": len(train.classes), "image_size": int(train.images.shape[-1])}

    def epoch_batches(self, epoch: int) -> list[list[Augmented]]:
        d = self.run.data
        rng = epoch_random(self.run.training.seed, epoch)
        order = list(range(len(self.splits["train"])))
        rng.shuffle(order)
        items = [Augmented(i, rng.randint(-d.shift, d.shift), rng.randint(-d.shift, d.shift),
                           d.flip and rng.random() < 0.5) for i in order]
        return [items[i:i + d.batch_size] for i in range(0, len(items), d.batch_size)]

    def _prepare(self, split: str, index: Tensor, items: list[Augmented] | None = None) -> ImageBatch:
        images = self.splits[split]
        pixels = images.images[index] if items is None else augment(images.images[index], items, self.run.data.shift)
        return ImageBatch(self.tokenizer(pixels.to(self.device)), images.labels[index].to(self.device))

    def prepare(self, batch: list[Augmented]) -> ImageBatch:
        return self._prepare("train", torch.tensor([a.index for a in batch]), batch)

    def loss(self, batch: ImageBatch) -> Tensor:
        logits = self.model.classify(batch.images)
        return F.cross_entropy(logits.float(), batch.labels, reduction="sum",
                               label_smoothing=self.model.config.label_smoothing)

    @torch.no_grad()
    def evaluate(self, split: str, autocast: AbstractContextManager[Any]) -> dict[str, float]:
        """Loss, accuracy and macro-F1 on ``split``."""
        images = self.splits[split]
        total, predicted = 0.0, []
        for start in range(0, len(images), self.run.data.batch_size):
            batch = self._prepare(split, torch.arange(start, min(start + self.run.data.batch_size, len(images))))
            with autocast:
                logits = self.model.classify(batch.images).float()
            total += F.cross_entropy(logits, batch.labels, reduction="sum").item()
            predicted += logits.argmax(-1).tolist()
        return {"loss": total / max(len(images), 1), **classification_scores(predicted, images.labels.tolist())}


@dataclass
class ImageClassificationRun(RunConfig[ImageClassificationData]):
    """Image classification with a vision Transformer (``model.preset: vit-28`` or any ``vit-*``)."""

    data: ImageClassificationData = field(default_factory=ImageClassificationData)
    model: VisionConfig = field(default_factory=VisionConfig)
    task_class = ImageClassificationTask
