"""Training a language model on text (:class:`LanguageModelTask`): the decoder-only Transformer
or the recurrent baseline (``model.family: rnn-lm``); generating with it is
:mod:`transformerkit.inference.language_modeling`."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from transformerkit.config import DecoderOnlyConfig
from transformerkit.data.text import block_starts, blocks, contiguous_split, read_text
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.inference.language_modeling import TextGenerator
from transformerkit.models.families import model_class_for
from transformerkit.models.rnn_language_model import RNNLanguageModelConfig
from transformerkit.training.recipe import RunConfig, validate_vocabulary_size
from transformerkit.training.task import model_config_for, run_tokenizer


@dataclass
class LanguageModelData:
    train: str = ""
    """A UTF-8 text file (``.txt`` or ``.txt.gz``); the model learns to continue it."""
    valid: str | None = None
    """Validation text; None takes the last ``valid_fraction`` of ``train`` (a contiguous split)."""
    valid_fraction: float = 0.05
    tokenizer: Literal["char", "bpe", "gpt2"] = "char"
    """``char``: one token per character; ``bpe``: byte-level BPE learned on ``train``;
    ``gpt2``: GPT-2's vocabulary from ``tokenizer_path``."""
    tokenizer_path: str = "data/gpt2-tokenizer"
    vocab_size: int = 4096
    """Vocabulary size of the learned ``bpe`` tokenizer."""
    block_size: int = 256
    """Tokens of context per training sequence."""
    valid_tokens: int | None = 65536
    """Validation scores the first this many tokens of the validation text (None: all of it)."""

    def validate(self, run: RunConfig[Any]) -> None:
        validate_vocabulary_size(self.vocab_size)
        if self.block_size < 1:
            raise ValueError(f"data.block_size must be positive, got {self.block_size}")
        if self.block_size > run.training.max_tokens:
            raise ValueError(f"training.max_tokens ({run.training.max_tokens}) must hold at least one "
                             f"block of data.block_size ({self.block_size}) tokens")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"data.valid_fraction must be in (0, 1), got {self.valid_fraction}")


@dataclass
class BlockBatch:
    """inputs, targets: (batch, block_size) token ids, targets = inputs shifted by one."""

    inputs: Tensor
    targets: Tensor

    @property
    def tokens(self) -> int:
        return self.targets.numel()


def train_tokenizer(run: LanguageModelRun, train_text: str, valid_text: str) -> SubwordTokenizer:
    data = run.data
    if data.tokenizer == "char":
        return SubwordTokenizer.train_characters([train_text, valid_text])
    if data.tokenizer == "bpe":
        return SubwordTokenizer.train_byte_level(train_text.splitlines(keepends=True), data.vocab_size)
    return SubwordTokenizer.from_directory(data.tokenizer_path)


class LanguageModelTask:
    """Text → tokens → a language model trained to predict the next token; validation NLL and ppl."""

    def __init__(self, run: LanguageModelRun, out: Path, resume: bool, device: torch.device) -> None:
        self.run, self.device = run, device
        data = run.data
        text = read_text(data.train)
        train_text, valid_text = ((text, read_text(data.valid)) if data.valid is not None
                                  else contiguous_split(text, data.valid_fraction))
        self.tokenizer = run_tokenizer(out, resume, lambda: train_tokenizer(run, train_text, valid_text))
        self.train_tokens = self.tokenizer.encode_long(train_text)
        self.valid_tokens = self.tokenizer.encode_long(valid_text)[:data.valid_tokens]
        self.block_size = data.block_size
        if len(self.train_tokens) <= self.block_size:
            raise ValueError(f"{data.train}: {len(self.train_tokens)} training tokens do not fill one block "
                             f"of data.block_size={self.block_size} (+1)")
        config = model_config_for(run.model, self.tokenizer)
        if getattr(config, "positional", None) == "learned" and config.max_positions < self.block_size:
            raise ValueError(f"model.max_positions ({config.max_positions}) is shorter than data.block_size "
                             f"({self.block_size})")
        self.model = model_class_for(config)(config).to(device)
        self.generation = run.decoding
        self.batch_size = run.training.max_tokens // self.block_size
        self.has_validation = len(self.valid_tokens) > self.block_size
        self.data_report = {"train_tokens": len(self.train_tokens), "valid_tokens": len(self.valid_tokens),
                            "vocab_size": self.tokenizer.vocab_size}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        starts = block_starts(len(self.train_tokens), self.block_size, self.run.training.seed, epoch)
        return [starts[i:i + self.batch_size] for i in range(0, len(starts), self.batch_size)]

    def prepare(self, batch: list[int]) -> BlockBatch:
        inputs, targets = blocks(self.train_tokens, batch, self.block_size)
        return BlockBatch(inputs.to(self.device), targets.to(self.device))

    def loss(self, batch: BlockBatch) -> Tensor:
        return self.model.loss(batch.inputs, batch.targets, reduction="sum")

    def test_scores(self, model_dir: Path, autocast: AbstractContextManager[Any]) -> None:
        """A language model has no test split: its validation text is what it is scored on."""
        return None

    @torch.no_grad()
    def validate(self, autocast: AbstractContextManager[Any]) -> dict[str, Any]:
        """NLL per token (``valid_loss``), perplexity, bits per character, and a sample from the validation text."""
        starts = list(range(0, len(self.valid_tokens) - self.block_size, self.block_size))
        nll = 0.0
        for i in range(0, len(starts), self.batch_size):
            inputs, targets = blocks(self.valid_tokens, starts[i:i + self.batch_size], self.block_size)
            with autocast:
                logits = self.model(inputs.to(self.device)).float()
            nll += torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.to(self.device).flatten(),
                                                     reduction="sum").item()
        tokens = len(starts) * self.block_size
        characters = len(self.tokenizer.decode([self.valid_tokens[:tokens].tolist()])[0])
        prompt = self.tokenizer.decode([self.valid_tokens[:self.block_size // 4].tolist()])[0]
        generator = TextGenerator(self.model, self.tokenizer, replace(self.generation, seed=self.run.training.seed))
        with autocast:
            sample = generator.generate([prompt])[0]
        return {"valid_loss": nll / tokens, "valid_ppl": math.exp(min(nll / tokens, 50.0)),
                "valid_bits_per_character": nll / math.log(2) / characters, "sample": prompt + sample}


@dataclass
class LanguageModelRun(RunConfig[LanguageModelData]):
    """A language-modeling run: a decoder-only Transformer or a recurrent model learns to continue a text."""

    data: LanguageModelData = field(default_factory=LanguageModelData)
    model: DecoderOnlyConfig | RNNLanguageModelConfig = field(default_factory=DecoderOnlyConfig)
    task_class = LanguageModelTask
