"""Sequence classification with an encoder-only model: fine-tuning (:class:`ClassificationTask`)
and labeling text (:class:`TextClassifier`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, read_lines
from transformerkit.config import TransformerConfig
from transformerkit.data.batching import TranslationExample, pad_right, token_batches
from transformerkit.data.labeled import LabeledCorpus, hash_split, load_labeled
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.devices import model_device, pick_device
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.tasks.fine_tuning import EncoderBatch, EncoderTaskData, encoder_for_task
from transformerkit.training.recipe import RunConfig
from transformerkit.training.task import ScoredBySplit


@dataclass
class ClassificationData(EncoderTaskData):
    train: str = ""
    """Labeled texts: CSV/TSV with a header, or JSONL. Without ``valid``/``test`` files the texts
    are split by a hash of the text (``valid_percent``, ``test_percent``)."""
    valid: str | None = None
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    encoding: str = "utf-8"
    valid_percent: float = 10.0
    test_percent: float = 10.0
    max_length: int = 128
    """Tokens per text, [CLS] and [SEP] included; longer texts are cut."""

    def validate(self, run: RunConfig[Any]) -> None:
        super().validate(run)
        if self.max_length < 2:
            raise ValueError(f"data.max_length must be at least 2, got {self.max_length}")
        if not 0 <= self.valid_percent + self.test_percent < 100:
            raise ValueError("data.valid_percent + data.test_percent must be in [0, 100)")


@dataclass
class LabeledBatch(EncoderBatch):
    labels: Tensor
    """(batch,) class indices."""


def splits(run: ClassificationRun) -> dict[str, LabeledCorpus]:
    """train / valid / test corpora: from their files, or the training file split by a hash of each text."""
    d = run.data
    read = lambda path: load_labeled(path, d.text_field, d.label_field, d.encoding)  # noqa: E731
    train = read(d.train)
    if d.valid is not None or d.test is not None:
        return {"train": train, "valid": read(d.valid) if d.valid else LabeledCorpus(),
                "test": read(d.test) if d.test else LabeledCorpus()}
    parts = {name: LabeledCorpus() for name in ("train", "valid", "test")}
    for text, label in zip(train.texts, train.labels):
        part = parts[hash_split(text, d.valid_percent, d.test_percent)]
        part.texts.append(text)
        part.labels.append(label)
    parts["train"].skipped_empty = train.skipped_empty
    return parts


def classification_scores(predicted: list[int], gold: list[int]) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (scikit-learn, imported here: it takes a second to load)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(gold, predicted)),
            "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0))}


class ClassificationTask(ScoredBySplit):
    """Labeled texts → WordPiece → encoder-only model with a classification head; cross-entropy;
    validation loss, accuracy and macro-F1. ``data.init_from`` fine-tunes a pretrained encoder."""

    def __init__(self, run: ClassificationRun, out: Path, resume: bool, device: torch.device) -> None:
        self.run, self.device = run, device
        d = run.data
        self.corpora = splits(run)
        self.labels = sorted(set(self.corpora["train"].labels))
        if len(self.labels) < 2:
            raise ValueError(f"{d.train}: classification needs at least two labels, found {self.labels}")
        self.model, self.tokenizer = encoder_for_task(run.model, d.init_from, d.tokenizer, resume, device,
                                                      labels=self.labels)
        self.examples = {name: self._encode(corpus) for name, corpus in self.corpora.items()}
        self.has_validation = bool(self.examples["valid"][0])
        self.generation = run.decoding
        self.data_report = {f"{name}_texts": len(c.texts) for name, c in self.corpora.items()} | {
            "skipped_empty": self.corpora["train"].skipped_empty, "labels": len(self.labels)}

    def _encode(self, corpus: LabeledCorpus) -> tuple[list[list[int]], list[int]]:
        ids = self.tokenizer.encode_for_encoder(corpus.texts, self.run.data.max_length)
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted(set(corpus.labels) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} do not occur in the training data")
        return ids, [index[label] for label in corpus.labels]

    def _batches(self, split: str, seed: int, epoch: int, shuffle: bool) -> list[list[int]]:
        ids, _ = self.examples[split]
        return token_batches([TranslationExample(row, []) for row in ids], self.run.training.max_tokens, seed, epoch,
                             shuffle=shuffle)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return self._batches("train", self.run.training.seed, epoch, shuffle=True)

    def _prepare(self, split: str, batch: list[int]) -> LabeledBatch:
        ids, labels = self.examples[split]
        padded, mask = pad_right([ids[i] for i in batch], self.tokenizer.pad_id)
        return LabeledBatch(padded.to(self.device), mask.to(self.device),
                            torch.tensor([labels[i] for i in batch], device=self.device))

    def prepare(self, batch: list[int]) -> LabeledBatch:
        return self._prepare("train", batch)

    def loss(self, batch: LabeledBatch) -> Tensor:
        logits = self.model.classify(batch.ids, batch.mask)
        return F.cross_entropy(logits.float(), batch.labels, reduction="sum",
                               label_smoothing=self.model.config.label_smoothing)

    @torch.no_grad()
    def evaluate(self, split: str, autocast: AbstractContextManager[Any]) -> dict[str, float]:
        """Loss, accuracy and macro-F1 on ``split``."""
        total, predicted, gold = 0.0, [], []
        for indices in self._batches(split, 0, 0, shuffle=False):
            batch = self._prepare(split, indices)
            with autocast:
                logits = self.model.classify(batch.ids, batch.mask).float()
            total += F.cross_entropy(logits, batch.labels, reduction="sum").item()
            predicted += logits.argmax(-1).tolist()
            gold += batch.labels.tolist()
        return {"loss": total / max(len(gold), 1), **classification_scores(predicted, gold)}


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


def serves(model_class: type, config: TransformerConfig, directory: Path) -> bool:
    """Whether a model directory is this module's: an encoder with a classification head."""
    return model_class is EncoderOnlyTransformer and bool(config.labels)


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


@dataclass
class ClassificationRun(RunConfig[ClassificationData]):
    """A sequence-classification run (an encoder-only model with a classification head)."""

    data: ClassificationData = field(default_factory=ClassificationData)
    task_class = ClassificationTask
