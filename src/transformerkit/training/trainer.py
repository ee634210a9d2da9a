"""The trainer: the paper's recipe (§5.3–5.4) with what a practitioner needs around it, for any task.

One optimizer step:

    loss = Σ_batches Σ_tokens CE_ε(logits, target) / (target tokens in the step)   (label smoothing ε_ls)
    clip ‖∇‖ to ``clip_norm``; Adam(β₁=0.9, β₂=0.98, ε=1e-9); lrate from :mod:`.schedule`

Around it: gradient accumulation, bf16 autocast, a wall-clock budget, periodic validation,
atomic checkpoints with ``latest`` / ``best`` pointers, early stopping, averaging of the last N
checkpoints, a progress bar, a JSONL log and TensorBoard. ``resume`` continues from ``latest``
exactly: same data order (batches are a function of seed and epoch, the position is saved),
optimizer, schedule and RNG states.

What is trained comes from a :class:`~transformerkit.training.task.TrainingTask` (data,
tokenizer, model, loss, validation metrics), picked by the recipe's ``task``.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from transformerkit.checkpoint import (CheckpointError, average_checkpoints, load_training_state, load_weights, point,
                                       save_checkpoint, save_model_dir)
from transformerkit.tasks.classification import ClassificationTask
from transformerkit.tasks.question_answering import QuestionAnsweringTask
from transformerkit.tasks.language_modeling import LanguageModelTask
from transformerkit.tasks.translation import TranslationTask
from transformerkit.training.recipe import RunConfig
from transformerkit.training.schedule import inverse_sqrt_scheduler
from transformerkit.training.task import TrainingTask

TASKS = {"translation": TranslationTask, "summarization": TranslationTask, "language-modeling": LanguageModelTask,
         "classification": ClassificationTask, "question-answering": QuestionAnsweringTask}


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_seconds: float = 0.0
    best_valid_loss: float = math.inf
    validations_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    stopped_because: str
    last_validation: dict[str, Any] | None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (then saves and exits)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __enter__(self) -> _StopRequest:
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class Trainer:
    def __init__(self, run: RunConfig, resume: bool = False) -> None:
        self.run = run
        t = run.training
        self.out = Path(t.output_dir)
        self.checkpoints = self.out / "checkpoints"
        if not resume and (self.checkpoints / "latest").exists():
            raise ValueError(f"{self.out} already holds a training run: pass --resume to continue it, "
                             f"or choose another training.output_dir")
        if resume and not (self.checkpoints / "latest").exists():
            raise ValueError(f"{self.out}: nothing to resume (no checkpoints/latest)")
        self.device = pick_device(t.device)
        torch.manual_seed(t.seed)
        self.task: TrainingTask = TASKS[run.task](run, self.out, resume, self.device)  # type: ignore[arg-type]
        if not resume:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "run.yaml").write_text(yaml.safe_dump(run.to_dict(), sort_keys=False), encoding="utf-8")
        self.model, self.tokenizer = self.task.model, self.task.tokenizer
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1.0, betas=t.adam_betas, eps=t.adam_eps,
                                          weight_decay=t.weight_decay)
        self.scheduler = inverse_sqrt_scheduler(self.optimizer, self.model.config.d_model, t.warmup_steps, t.lr_scale)
        self.progress = Progress()
        if resume:
            self._restore(self.checkpoints / "latest")
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if t.precision == "bf16"
                         else nullcontext())

    # --------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        p = self.progress
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": {"step": p.step, "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch,
                         "elapsed_seconds": p.elapsed_seconds, "best_valid_loss": p.best_valid_loss,
                         "validations_without_improvement": p.validations_without_improvement,
                         "history": json.dumps(p.history)},
            "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _restore(self, directory: Path) -> None:
        load_weights(self.model, directory / "model.safetensors")
        state = load_training_state(directory)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            saved = dict(state["progress"])
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{directory}: training state does not fit this run ({error})") from None
        saved["history"] = json.loads(saved["history"])
        self.progress = Progress(**saved)
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def save(self) -> Path:
        directory = self.checkpoints / f"step-{self.progress.step:08d}"
        save_checkpoint(directory, self.model, self.tokenizer, self.task.generation, self._state())
        self._prune()
        return directory

    def _prune(self) -> None:
        steps = sorted(self.checkpoints.glob("step-*"))
        keep = max(self.run.training.keep_checkpoints, self.run.training.average_last)
        protected = {(self.checkpoints / name).resolve() for name in ("latest", "best")
                     if (self.checkpoints / name).exists()}
        for directory in steps[:-keep]:
            if directory.resolve() not in protected:
                shutil.rmtree(directory)

    # ---------------------------------------------------------------------------------- loop
    def _step(self, batches: list[Any]) -> tuple[float, int]:
        """One optimizer step over ``batches`` (gradient accumulation); returns (mean loss, target tokens)."""
        prepared = [self.task.prepare(b) for b in batches]
        tokens = sum(p.tokens for p in prepared)
        total = 0.0
        for batch in prepared:
            with self.autocast:
                loss = self.task.loss(batch) / tokens
            loss.backward()
            total += loss.item()
        if self.run.training.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.training.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, tokens

    def _stop_reason(self, started: float, stop: _StopRequest) -> str | None:
        t, p = self.run.training, self.progress
        if stop.signal is not None:
            return "interrupted"
        if t.max_steps is not None and p.step >= t.max_steps:
            return "max_steps"
        if t.max_epochs is not None and p.epoch >= t.max_epochs:
            return "max_epochs"
        if t.max_minutes is not None and p.elapsed_seconds + time.perf_counter() - started >= 60 * t.max_minutes:
            return "max_minutes"
        if t.patience is not None and p.validations_without_improvement >= t.patience:
            return "early_stopping"
        return None

    def train(self) -> TrainResult:
        t, p = self.run.training, self.progress
        self.model.train()
        log = JsonlLog(self.out / "log.jsonl", self.out / "tensorboard" if t.tensorboard else None)
        log.write({"event": "start", "step": p.step, "task": self.run.task, **self.task.data_report,
                   "parameters": sum(x.numel() for x in self.model.parameters()), "device": str(self.device)})
        bar = tqdm(total=t.max_steps, initial=p.step, disable=not t.progress, unit="step", dynamic_ncols=True)
        started = time.perf_counter()
        window_tokens, window_start, window_loss, window_steps = 0, time.perf_counter(), 0.0, 0
        last_validation: dict[str, Any] | None = p.history[-1] if p.history else None
        save_every = t.save_every or t.validate_every
        with _StopRequest() as stop:
            reason = self._stop_reason(started, stop)
            while reason is None:
                batches = self.task.epoch_batches(p.epoch)
                while reason is None and p.batch_in_epoch < len(batches):
                    group = batches[p.batch_in_epoch:p.batch_in_epoch + t.accumulate]
                    loss, tokens = self._step(group)
                    p.batch_in_epoch += len(group)
                    p.step += 1
                    window_tokens, window_loss, window_steps = window_tokens + tokens, window_loss + loss, window_steps + 1
                    bar.update(1)
                    if p.step % t.log_every == 0:
                        now = time.perf_counter()
                        record = {"event": "train", "step": p.step, "epoch": p.epoch, "loss": window_loss / window_steps,
                                  "lr": self.scheduler.get_last_lr()[0],
                                  "tokens_per_second": window_tokens / (now - window_start),
                                  "elapsed_seconds": p.elapsed_seconds + now - started}
                        log.write(record)
                        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}",
                                        lr=f"{record['lr']:.2e}", eta=self._eta(started))
                        window_tokens, window_start, window_loss, window_steps = 0, now, 0.0, 0
                    improved, paused_at = False, time.perf_counter()
                    if self.task.has_validation and p.step % t.validate_every == 0:
                        last_validation = self._validate_and_track(log, started)
                        improved = last_validation["improved"]
                    reason = self._stop_reason(started, stop)
                    if improved or p.step % save_every == 0 or reason is not None:
                        p.elapsed_seconds += time.perf_counter() - started
                        started = time.perf_counter()
                        saved = self.save()
                        if improved:
                            point(self.checkpoints / "best", saved)
                            self._prune()
                    window_start += time.perf_counter() - paused_at  # tokens/s counts training time only
                if p.batch_in_epoch >= len(batches):
                    p.epoch += 1
                    p.batch_in_epoch = 0
                    reason = reason or self._stop_reason(started, stop)
            if not (self.checkpoints / "latest").exists() or \
                    (self.checkpoints / "latest").resolve().name != f"step-{p.step:08d}":
                p.elapsed_seconds += time.perf_counter() - started
                self.save()
        bar.close()
        log.write({"event": "stop", "step": p.step, "reason": reason})
        model_dir = self.finish()
        log.close()
        return TrainResult(self.out, model_dir, p.step, reason, last_validation)

    def _eta(self, started: float) -> str:
        t, p = self.run.training, self.progress
        elapsed = p.elapsed_seconds + time.perf_counter() - started
        remaining = []
        if t.max_minutes is not None:
            remaining.append(60 * t.max_minutes - elapsed)
        if t.max_steps is not None and p.step:
            remaining.append(elapsed / p.step * (t.max_steps - p.step))
        if not remaining:
            return "?"
        seconds = max(0, int(min(remaining)))
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _validate_and_track(self, log: JsonlLog, started: float) -> dict[str, Any]:
        p = self.progress
        self.model.eval()
        result = self.task.validate(self.autocast)
        self.model.train()
        improved = result["valid_loss"] < p.best_valid_loss
        if improved:
            p.best_valid_loss = result["valid_loss"]
            p.validations_without_improvement = 0
        else:
            p.validations_without_improvement += 1
        record = {"event": "valid", "step": p.step, **result, "improved": improved,
                  "elapsed_seconds": p.elapsed_seconds + time.perf_counter() - started}
        p.history.append(record)
        log.write(record)
        metrics = " ".join(f"{k.removeprefix('valid_')} {v:.3f}" for k, v in result.items() if isinstance(v, float))
        tqdm.write(f"step {p.step}: valid {metrics}" + (" (best)" if improved else ""))
        for key, value in result.items():
            if isinstance(value, str):
                tqdm.write(f"{key}:\n{value}")
        return record

    def finish(self) -> Path:
        """Write ``model/``: the average of the last ``average_last`` checkpoints (or the last one)."""
        steps = sorted(self.checkpoints.glob("step-*"))[-self.run.training.average_last:]
        model_dir = self.out / "model"
        if len(steps) > 1:
            average_checkpoints(steps, model_dir)
        else:
            save_model_dir(model_dir, self.model, self.tokenizer, self.task.generation)
        return model_dir


class JsonlLog:
    """Metrics as JSON lines, mirrored to TensorBoard when it is installed and enabled."""

    def __init__(self, path: Path, tensorboard_dir: Path | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps({"time": time.time(), **record}) + "\n")
        self.file.flush()
        if self.writer is not None and record.get("event") in ("train", "valid"):
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()
