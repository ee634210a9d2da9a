"""Training a sequence classifier: an encoder-only model with a classification head, fine-tuned
(:class:`ClassificationTask`); using it is :mod:`transformerkit.inference.classification`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformerkit.config import EncoderOnlyConfig
from transformerkit.data.batching import EncoderBatch, batch_by_size, pad_right
from transformerkit.data.labeled import LabeledCorpus, hash_split, load_labeled
from transformerkit.inference.classification import classification_scores
from transformerkit.tasks.fine_tuning import EncoderTaskData, encoder_for_task
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
        return batch_by_size([len(row) for row in ids], self.run.training.max_tokens, seed, epoch, shuffle=shuffle)

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
class ClassificationRun(RunConfig[ClassificationData]):
    """A sequence-classification run (an encoder-only model with a classification head)."""

    data: ClassificationData = field(default_factory=ClassificationData)
    model: EncoderOnlyConfig = field(default_factory=EncoderOnlyConfig)
    task_class = ClassificationTask
