"""What the trainer needs from a task (translation, language modeling, …).

The :class:`~transformerkit.training.trainer.Trainer` owns everything every task shares:
optimizer and schedule, precision, accumulation, the wall-clock budget, checkpoints and resume,
early stopping, averaging, progress and logs. A task owns its data, tokenizer, model, loss and
validation metrics. One trainer, many tasks: composition, not subclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from transformerkit.checkpoint import load_model_dir
from transformerkit.config import TextConfig
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.training.distributed import barrier, is_main_process


class PreparedBatch(Protocol):
    tokens: int
    """Target tokens the batch's loss sums over."""


class TrainingTask(Protocol):
    model: nn.Module
    """A model with ``config`` and ``model_type`` (what checkpoints save)."""
    tokenizer: SubwordTokenizer
    generation: GenerationConfig
    """Decoding defaults saved with the model."""
    data_report: dict[str, int]
    """Counts logged at the start (examples kept, dropped, …)."""
    has_validation: bool

    def epoch_batches(self, epoch: int) -> list[Any]:
        """The training batches of ``epoch`` in order; a pure function of (seed, epoch) so resume is exact."""

    def prepare(self, batch: Any) -> PreparedBatch:
        """Tensors of one batch on the model's device."""

    def loss(self, batch: Any) -> Tensor:
        """The loss of a prepared batch, summed over its target tokens."""

    def validate(self, autocast: AbstractContextManager[Any]) -> dict[str, Any]:
        """Validation metrics; ``valid_loss`` (lower is better) decides the best checkpoint."""

    def test_scores(self, model_dir: Path, autocast: AbstractContextManager[Any]) -> dict[str, Any] | None:
        """Scores of the final model (``model_dir``: the average of the last checkpoints) on the
        test split, or None where the run has none."""


class EvaluatedTask(Protocol):
    """A task that scores any split with the model it holds (``evaluate``)."""

    model: nn.Module
    device: torch.device

    def evaluate(self, split: str, autocast: AbstractContextManager[Any]) -> dict[str, Any]: ...


def final_model_scores(task: EvaluatedTask, model_dir: Path, autocast: AbstractContextManager[Any]) -> dict[str, Any]:
    """``task.evaluate("test")`` with the final weights of ``model_dir`` in place of the trained
    ones, keys prefixed ``test_``."""
    task.model, _, _ = load_model_dir(model_dir, task.device)
    return {f"test_{k}": v for k, v in task.evaluate("test", autocast).items()}


class ScoredBySplit:
    """``validate`` and ``test_scores`` of a :class:`TrainingTask` for a task that scores any split
    with ``evaluate(split, autocast)`` (an :class:`EvaluatedTask`): the validation split's scores
    prefixed ``valid_``, and the final model's on the test split where ``has_test`` says there is one."""

    has_test = True

    def validate(self: Any, autocast: AbstractContextManager[Any]) -> dict[str, Any]:
        return {f"valid_{k}": v for k, v in self.evaluate("valid", autocast).items()}

    def test_scores(self: Any, model_dir: Path, autocast: AbstractContextManager[Any]) -> dict[str, Any] | None:
        return final_model_scores(self, model_dir, autocast) if self.has_test else None


def run_tokenizer(out: Path, resume: bool, train: Callable[[], SubwordTokenizer]) -> SubwordTokenizer:
    """The run's tokenizer: learned once (by rank 0 of several processes) and saved as
    ``out/tokenizer.json``; a resumed run, or another rank, reloads it."""
    path = out / "tokenizer.json"
    if not resume and is_main_process():
        tokenizer = train()
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(path)
    barrier()
    return SubwordTokenizer.load(path)


TextConfigT = TypeVar("TextConfigT", bound=TextConfig)


def model_config_for(config: TextConfigT, tokenizer: SubwordTokenizer, **changes: Any) -> TextConfigT:
    """``config`` with the tokenizer's vocabulary size and special ids, and ``changes``."""
    return config.replace(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
                          eos_id=tokenizer.eos_id, **changes)
