"""What turns stored images (uint8 pixels) into model inputs, saved with a model as
``preprocessor_config.json`` (Hugging Face's name for it), in place of a text model's ``tokenizer.json``.

* :class:`ImageProcessor` (ViT): resize to ``image_size`` (bilinear), rescale to [0, 1], normalize
  per channel — ``(pixels / 255 − mean) / std``. Its file uses ``ViTImageProcessor``'s fields, so
  ``AutoImageProcessor`` reads it too.
* :class:`PixelTokenizer` (image generation): resize to ``image_size`` (area average), quantize
  each pixel to one of ``levels`` grey levels, read in raster order, and put the class first::

      ids = [levels + class, q(p₀), q(p₁), …, q(p_{S²−1})],  q(p) = round(p / 255 · (levels − 1))

  Token ids 0 … levels−1 are grey levels, levels … levels+classes−1 are classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

PREPROCESSOR_CONFIG = "preprocessor_config.json"


def resize(images: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """uint8 or float images (batch, C, H, W) → float (batch, C, size, size) in the same range;
    unchanged (as float) when already that size."""
    images = images.float()
    if images.shape[-2:] == (size, size):
        return images
    if mode == "area":
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode=mode, align_corners=False, antialias=True)


def _read(path: Path, kind: str) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable {kind} ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: not a {kind} (expected a JSON object)")
    return values


@dataclass
class ImageProcessor:
    """uint8 images (batch, C, H, W) → normalized float (batch, C, image_size, image_size)."""

    image_size: int
    image_mean: list[float]
    image_std: list[float]

    def __post_init__(self) -> None:
        if len(self.image_mean) != len(self.image_std) or not self.image_mean:
            raise ValueError(f"image_mean and image_std need one value per channel, got {self.image_mean} and "
                             f"{self.image_std}")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")

    @classmethod
    def fitted(cls, images: Tensor, image_size: int) -> ImageProcessor:
        """A processor whose mean and std are the per-channel statistics of ``images`` (the training set)."""
        pixels = images.float().div(255).transpose(0, 1).flatten(1)  # (C, pixels)
        return cls(image_size, pixels.mean(dim=1).tolist(), pixels.std(dim=1).tolist())

    @property
    def num_channels(self) -> int:
        return len(self.image_mean)

    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.num_channels:
            raise ValueError(f"expected images (batch, {self.num_channels}, H, W), got {tuple(images.shape)}")
        mean = torch.tensor(self.image_mean, device=images.device)[:, None, None]
        std = torch.tensor(self.image_std, device=images.device)[:, None, None]
        return (resize(images, self.image_size) / 255 - mean) / std

    def save(self, path: Path) -> None:
        values = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                  "size": {"height": self.image_size, "width": self.image_size}, "resample": 2,
                  "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                  "image_mean": self.image_mean, "image_std": self.image_std}
        path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: Path) -> ImageProcessor:
        try:
            size = values["size"]
            return cls(int(size["height"] if isinstance(size, dict) else size),
                       [float(x) for x in values["image_mean"]], [float(x) for x in values["image_std"]])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a ViT image processor ({error})") from None


@dataclass
class PixelTokenizer:
    """Grayscale images ⇄ token sequences for a class-conditional autoregressive image model."""

    image_size: int
    levels: int
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.image_size < 1 or not 2 <= self.levels <= 256:
            raise ValueError(f"image_size must be positive and levels in [2, 256], got {self.image_size} "
                             f"and {self.levels}")
        if not self.labels:
            raise ValueError("a pixel tokenizer needs the class names (labels)")

    @property
    def vocab_size(self) -> int:
        return self.levels + len(self.labels)

    @property
    def pixels(self) -> int:
        """Tokens per image (without the class token)."""
        return self.image_size ** 2

    def class_token(self, label: int | Tensor) -> int | Tensor:
        return self.levels + label

    def quantize(self, images: Tensor) -> Tensor:
        """uint8 grayscale images (batch, 1, H, W) → grey levels (batch, S²), raster order."""
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"pixel tokenizers take grayscale images (batch, 1, H, W), got {tuple(images.shape)}")
        small = resize(images, self.image_size, mode="area")
        return (small / 255 * (self.levels - 1)).round().long().clamp(0, self.levels - 1).flatten(1)

    def encode(self, images: Tensor, labels: Tensor) -> Tensor:
        """Images (batch, 1, H, W) and class indices (batch,) → ids (batch, 1 + S²): the class, then the pixels."""
        return torch.cat([self.class_token(labels.long())[:, None], self.quantize(images)], dim=1)

    def decode(self, levels: Tensor) -> Tensor:
        """Grey levels (batch, S²) → uint8 images (batch, 1, S, S)."""
        scaled = levels.float() * (255 / (self.levels - 1))
        return scaled.round().to(torch.uint8).view(-1, 1, self.image_size, self.image_size)

    def save(self, path: Path) -> None:
        values = {"image_processor_type": "PixelTokenizer", "image_size": self.image_size, "levels": self.levels,
                  "labels": self.labels}
        path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: Path) -> PixelTokenizer:
        try:
            return cls(int(values["image_size"]), int(values["levels"]), [str(x) for x in values["labels"]])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a pixel tokenizer ({error})") from None


def load_image_preprocessor(path: Path) -> ImageProcessor | PixelTokenizer:
    """The processor saved in a ``preprocessor_config.json``, by its ``image_processor_type``."""
    values = _read(path, "image processor")
    kinds = {"ViTImageProcessor": ImageProcessor, "PixelTokenizer": PixelTokenizer}
    kind = values.get("image_processor_type")
    if kind not in kinds:
        raise ValueError(f"{path}: image_processor_type {kind!r} is not one of {', '.join(kinds)}")
    return kinds[kind].from_dict(values, path)
