"""Training extractive question answering (BERT's SQuAD recipe): an encoder-only model with a
span head (:class:`QuestionAnsweringTask`). The windows, span loss and answer extraction it
shares with answering are :mod:`transformerkit.inference.question_answering`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformerkit.config import EncoderOnlyConfig
from transformerkit.data.squad import load_squad, squad_scores
from transformerkit.inference.question_answering import (SpanBatch, predict_answers, span_batch, span_loss,
                                                         window_batches, windows)
from transformerkit.tasks.fine_tuning import EncoderTaskData, encoder_for_task
from transformerkit.training.recipe import RunConfig
from transformerkit.training.task import ScoredBySplit


@dataclass
class QuestionAnsweringData(EncoderTaskData):
    train: str = ""
    """Questions in SQuAD v1.1 JSON format (``valid`` and ``test`` too)."""
    valid: str | None = None
    test: str | None = None
    max_length: int = 384
    """Tokens per model input: [CLS] question [SEP] context window [SEP]."""
    stride: int = 128
    """Context tokens shared by consecutive windows of a long context."""
    max_question_tokens: int = 64
    """Longer questions are cut."""
    max_answer_tokens: int = 30
    """The longest answer span predicted."""
    every_occurrence: bool = False
    """Train on every occurrence of the answer in a window (the question's answers that lie in it),
    not only the first: for cloze questions, whose answer word recurs."""

    def validate(self, run: RunConfig[Any]) -> None:
        super().validate(run)
        for name in ("max_length", "max_question_tokens", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.stride < self.max_length - 4:
            raise ValueError(f"data.stride ({self.stride}) must be in [0, max_length - 4): a window holds "
                             "[CLS] question [SEP] context [SEP] and moves on by max_length - question - 3 - stride")


class QuestionAnsweringTask(ScoredBySplit):
    """SQuAD-format questions → windows → encoder-only model with a span head; validation loss,
    exact match and F1 (SQuAD v1.1's definitions). ``data.init_from`` fine-tunes a pretrained encoder."""

    def __init__(self, run: QuestionAnsweringRun, out: Path, resume: bool, device: torch.device) -> None:
        self.run, self.device = run, device
        d = run.data
        self.examples = {"train": load_squad(d.train), "valid": load_squad(d.valid) if d.valid else [],
                         "test": load_squad(d.test) if d.test else []}
        if not self.examples["train"]:
            raise ValueError(f"{d.train}: no questions")
        self.model, self.tokenizer = encoder_for_task(run.model, d.init_from, d.tokenizer, resume, device,
                                                      span_head=True)
        if self.model.pooler is not None:  # the span head reads every token, not the pooled [CLS]:
            self.model.pooler.requires_grad_(False)  # frozen, so DDP does not wait for its gradients
        if d.max_length > self.model.config.max_positions:
            raise ValueError(f"data.max_length ({d.max_length}) exceeds the model's max_positions "
                             f"({self.model.config.max_positions})")
        self.windows = {split: windows(self.tokenizer, examples, d.max_length, d.stride, d.max_question_tokens)
                        for split, examples in self.examples.items()}
        self.has_validation, self.has_test = bool(self.examples["valid"]), bool(self.examples["test"])
        self.generation = run.decoding
        self.data_report = {f"{split}_questions": len(e) for split, e in self.examples.items()} | {
            f"{split}_windows": len(w) for split, w in self.windows.items()} | {
            "train_windows_without_answer": sum(w.start == 0 for w in self.windows["train"])}

    def _batches(self, split: str, seed: int, epoch: int, shuffle: bool) -> list[list[int]]:
        return window_batches(self.windows[split], self.run.training.max_tokens, seed, epoch, shuffle)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return self._batches("train", self.run.training.seed, epoch, shuffle=True)

    def prepare(self, batch: list[int]) -> SpanBatch:
        return span_batch([self.windows["train"][i] for i in batch], self.tokenizer.pad_id, self.device)

    def loss(self, batch: SpanBatch) -> Tensor:
        start, end = self.model.span_logits(batch.ids, batch.mask, batch.token_types)
        return span_loss(start, end, batch, self.run.data.every_occurrence)

    def evaluate(self, split: str, autocast: AbstractContextManager[Any]) -> dict[str, float]:
        """Loss per window, and exact match and F1 (percent) of the best span per question."""
        total, predictions = predict_answers(self.model, self.examples[split], self.windows[split],
                                             self._batches(split, 0, 0, shuffle=False), self.tokenizer.pad_id,
                                             self.run.data.max_answer_tokens, autocast, self.run.data.every_occurrence)
        return {"loss": total / max(len(self.windows[split]), 1),
                **squad_scores({i: p.text for i, p in predictions.items()}, self.examples[split])}


@dataclass
class QuestionAnsweringRun(RunConfig[QuestionAnsweringData]):
    """An extractive question-answering run (an encoder-only model with a span head)."""

    data: QuestionAnsweringData = field(default_factory=QuestionAnsweringData)
    model: EncoderOnlyConfig = field(default_factory=EncoderOnlyConfig)
    task_class = QuestionAnsweringTask
