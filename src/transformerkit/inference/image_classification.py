"""Labeling images with a vision Transformer (:class:`ImageClassifier`), its loader, the
class-token attention maps (rollout) and their plot, and the ``classify-image`` verb."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError
from transformerkit.data.image_processing import ImageProcessor
from transformerkit.data.images import image_splits, read_image
from transformerkit.devices import model_device, pick_device
from transformerkit.inference.classification import classification_scores
from transformerkit.models.vision import VisionTransformer


@dataclass
class ImageClassifier:
    model: VisionTransformer
    processor: ImageProcessor

    @torch.inference_mode()
    def probabilities(self, images: Tensor) -> Tensor:
        """uint8 images (batch, C, H, W) of any size → class probabilities (batch, classes)."""
        device = model_device(self.model)
        return self.model.classify(self.processor(images.to(device))).float().softmax(-1)

    def classify(self, images: Tensor) -> list[tuple[str, float]]:
        """(label, probability) per image."""
        best = self.probabilities(images).max(dim=-1)
        return [(self.model.config.labels[i], p) for i, p in zip(best.indices.tolist(), best.values.tolist())]

    def classify_files(self, paths: list[str | Path]) -> list[tuple[str, float]]:
        """(label, probability) per image file (converted to the model's channels)."""
        size = self.model.config.image_size
        images = torch.stack([read_image(Path(p), self.model.config.num_channels, size) for p in paths])
        return self.classify(images)


def attention_rollout(layers: list[Tensor]) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each token's final state draws on each input.

        Ā_l = rows_normalized(½ · mean_heads(A_l) + ½ · I)     (the residual path counts as half)
        R   = Ā_L · … · Ā_1

    layers: per layer (batch, heads, seq, seq) → R (batch, seq, seq).
    """
    rollout = None
    for weights in layers:
        mixed = 0.5 * weights.float().mean(dim=1) + 0.5 * torch.eye(weights.shape[-1], device=weights.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    assert rollout is not None, "no attention layers"
    return rollout


def class_attention_map(model: VisionTransformer, images: Tensor, method: str = "rollout") -> Tensor:
    """Where the class token looks, per patch: normalized images (batch, C, H, W) → (batch, H/P, W/P),
    each map summing to 1. ``rollout``: through all layers; ``last-layer``: the last layer's
    class-token attention, averaged over heads."""
    if method not in ("rollout", "last-layer"):
        raise ValueError(f"unknown attention map method {method!r}; choose rollout or last-layer")
    _, layers = model(images, need_weights=True)
    weights = [layer.self_attention for layer in layers]
    row = attention_rollout(weights)[:, 0, 1:] if method == "rollout" else weights[-1].float().mean(dim=1)[:, 0, 1:]
    side = model.config.image_size // model.config.patch_size
    return (row / row.sum(dim=-1, keepdim=True)).view(-1, side, side)


def plot_image_attention(classifier: ImageClassifier, paths: list[Path], out: Path, method: str = "rollout") -> Path:
    """Each image beside its class-token attention map drawn over it, with the predicted label: one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = classifier.model.config
    images = torch.stack([read_image(p, config.num_channels, config.image_size) for p in paths])
    device = model_device(classifier.model)
    with torch.inference_mode():
        maps = class_attention_map(classifier.model, classifier.processor(images.to(device)), method).cpu()
    labels = classifier.classify(images)
    upsampled = F.interpolate(maps[:, None], size=images.shape[-2:], mode="nearest")[:, 0]
    figure, axes = plt.subplots(len(paths), 2, figsize=(4.4, 2.2 * len(paths)), squeeze=False)
    for row, (path, image, heat, (label, probability)) in enumerate(zip(paths, images, upsampled, labels)):
        picture = (image[0] if config.num_channels == 1 else image.permute(1, 2, 0)).numpy()
        axes[row][0].imshow(picture, cmap="gray", vmin=0, vmax=255)
        axes[row][0].set_title(f"{path.name}: {label} ({probability:.2f})", fontsize=7)
        axes[row][1].imshow(picture, cmap="gray", vmin=0, vmax=255)
        axes[row][1].imshow(heat.numpy(), cmap="inferno", alpha=0.6)
        axes[row][1].set_title(f"class-token attention ({method})", fontsize=7)
        for axis in axes[row]:
            axis.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=150)
    plt.close(figure)
    return out


def load_image_classifier(model_dir: str | Path, device: str | None = None) -> ImageClassifier:
    device = pick_device(device)
    model, processor, _ = load_model_dir(model_dir, device)
    if not isinstance(model, VisionTransformer) or not model.config.labels:
        raise CheckpointError(f"{model_dir} holds no image classification model")
    assert isinstance(processor, ImageProcessor)
    return ImageClassifier(model, processor)


def add_commands(commands: Commands) -> None:
    """``classify-image``: file<TAB>label<TAB>probability per image."""
    command = commands.add_parser("classify-image", help="label image files with a vision model "
                                  "(file<TAB>label<TAB>probability)")
    command.add_argument("--model", required=True, help="image classification model directory")
    command.add_argument("files", nargs="+", help="image files (PNG, JPEG, …)")
    command.set_defaults(handler=classify_image_command)


def classify_image_command(args: Any) -> int:
    classifier = load_image_classifier(args.model)
    for start in range(0, len(args.files), 64):
        files = args.files[start:start + 64]
        for path, (label, probability) in zip(files, classifier.classify_files(files)):
            print(f"{path}\t{label}\t{probability:.4f}")
    return 0


def evaluate(args: Any) -> dict[str, Any]:
    """``transformerkit evaluate`` for a ViT: accuracy and macro-F1 on the test split of ``--data``."""
    classifier = load_image_classifier(args.model)
    test = image_splits(args.data, None, 0.0, args.test_percent, classifier.model.config.image_size)["test"]
    predicted = torch.cat([classifier.probabilities(test.images[i:i + 256]).argmax(-1).cpu()
                           for i in range(0, len(test), 256)])
    return {**classification_scores(predicted.tolist(), test.labels.tolist()), "images": len(test)}


def plot_attention(args: Any) -> str:
    """``transformerkit plot-attention --image``: class-token attention over each image."""
    if not args.image:
        raise UsageError(f"{args.model} is a vision model: give --image FILE …")
    path = plot_image_attention(load_image_classifier(args.model), [Path(p) for p in args.image], Path(args.out),
                                args.method)
    return f"attention maps written to {path}"
