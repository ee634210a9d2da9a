"""Labeling text with a sequence classifier (an encoder-only model with a classification head):
:class:`TextClassifier`, its loader, accuracy and macro-F1, and the ``classify`` verb."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, read_lines
from transformerkit.data.batching import pad_right
from transformerkit.data.extras import optional_module
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.devices import model_device, pick_device
from transformerkit.models.encoder_only import EncoderOnlyTransformer


def classification_scores(predicted: list[int], gold: list[int]) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (scikit-learn's, imported here: it takes a second to load)."""
    metrics = optional_module("sklearn.metrics", "sklearn", "classification scores (accuracy, macro-F1)")
    return {"accuracy": float(metrics.accuracy_score(gold, predicted)),
            "macro_f1": float(metrics.f1_score(gold, predicted, average="macro", zero_division=0))}


@dataclass
class TextClassifier:
    model: EncoderOnlyTransformer
    tokenizer: SubwordTokenizer
    max_length: int = 512

    @torch.inference_mode()
    def probabilities(self, texts: list[str]) -> Tensor:
        """(len(texts), labels) class probabilities, in the order of ``config.labels``."""
        device = model_device(self.model)
        ids, mask = pad_right(self.tokenizer.encode_for_encoder(texts, self.max_length), self.tokenizer.pad_id)
        return self.model.classify(ids.to(device), mask.to(device)).float().softmax(-1).cpu()

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label, probability) of the most probable label, per text."""
        best = self.probabilities(texts).max(dim=-1)
        return [(self.model.config.labels[i], p) for i, p in zip(best.indices.tolist(), best.values.tolist())]


def load_classifier(model_dir: str | Path, device: str | None = None) -> TextClassifier:
    device = pick_device(device)
    model, tokenizer, _ = load_model_dir(model_dir, device)
    if not isinstance(model, EncoderOnlyTransformer) or not model.config.labels:
        raise CheckpointError(f"{model_dir} holds no classification model")
    return TextClassifier(model, tokenizer, model.config.max_positions)


def add_commands(commands: Commands) -> None:
    """``classify``: label<TAB>probability per input line."""
    command = commands.add_parser("classify", help="label lines with a classification model (label<TAB>probability)")
    command.add_argument("--model", required=True, help="model directory")
    command.add_argument("--input", default=None, help="read this file instead of stdin")
    command.set_defaults(handler=classify_command)


def classify_command(args: Any) -> int:
    classifier = load_classifier(args.model)
    lines = read_lines(args.input)
    for start in range(0, len(lines), 64):
        for label, probability in classifier.classify(lines[start:start + 64]):
            print(f"{label}\t{probability:.4f}")
    return 0
