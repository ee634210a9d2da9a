"""What the image tasks (classification, generation) share: the base of their data sections and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformerkit.training.recipe import RunConfig


@dataclass
class ImageData:
    """What the image tasks' data sections share (sources: :func:`transformerkit.data.images.load_images`)."""

    train: str = ""
    """An MNIST-layout directory (Fashion-MNIST), a class-folder directory, a pixel CSV, or ``sklearn:digits``."""
    test: str | None = None
    """A separate test source; default: the source's own test split (MNIST layout), else ``test_percent`` of ``train``."""
    valid_percent: float = 10.0
    """Share of the training images held out for validation (by a hash of each image)."""
    test_percent: float = 10.0
    """Share held out for testing when there is no test split."""
    batch_size: int = 128
    """Images per batch."""

    def validate(self, run: RunConfig[Any]) -> None:
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {self.batch_size}")
        if not 0 <= self.valid_percent + self.test_percent < 100:
            raise ValueError("data.valid_percent + data.test_percent must be in [0, 100)")
