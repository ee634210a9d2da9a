"""Image classification with a vision Transformer: training (:class:`ImageClassificationTask`)
and labeling image files (:class:`ImageClassifier`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, UsageError
from transformerkit.config import TransformerConfig
from transformerkit.data.batching import epoch_random
from transformerkit.data.image_processing import ImageProcessor
from transformerkit.data.images import ImageSet, image_splits, read_image_file
from transformerkit.devices import model_device, pick_device
from transformerkit.models.vision import VisionTransformer
from transformerkit.tasks.classification import classification_scores
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
        if not run.model.image_size:
            raise ValueError("model.image_size is 0: image classification needs a vision model (model.preset: vit-…)")
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
        images = torch.stack([read_image_file(Path(p), self.model.config.num_channels, size) for p in paths])
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
    images = torch.stack([read_image_file(p, config.num_channels, config.image_size) for p in paths])
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


def serves(model_class: type, config: TransformerConfig, directory: Path) -> bool:
    """Whether a model directory is this module's: a vision Transformer."""
    return model_class is VisionTransformer


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


@dataclass
class ImageClassificationRun(RunConfig[ImageClassificationData]):
    """Image classification with a vision Transformer (``model.preset: vit-28`` or any ``vit-*``)."""

    data: ImageClassificationData = field(default_factory=ImageClassificationData)
    task_class = ImageClassificationTask
