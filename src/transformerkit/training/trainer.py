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
tokenizer, model, loss, validation metrics) that the run builds (``RunConfig.training_task``):
the trainer knows no task.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import signal
import sys
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from transformerkit.backends import machine
from transformerkit.backends.calibration import Choice, choose_onednn_products, choose_precision
from transformerkit.backends.onednn import ONEDNN_AVAILABLE, use_onednn_products
from transformerkit.checkpoint import (CheckpointError, WeightsMismatch, average_checkpoints, load_training_state,
                                       load_weights, point, remove_stale_temporaries, save_checkpoint)
from transformerkit.devices import pick_device
from transformerkit.memory import set_freed_memory_retained
from transformerkit.nn.attention import fuse_legacy_projections, use_attention_kernel
from transformerkit.nn.dropout import use_packed_dropout
from transformerkit.nn.layers import TransformerLayer
from transformerkit.training.distributed import Distributed, barrier
from transformerkit.training.recipe import RunConfig
from transformerkit.training.schedule import inverse_sqrt_scheduler
from transformerkit.training.speed_measures import choose_memory_retention, choose_training_measures
from transformerkit.training.task import TrainingTask


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_seconds: float = 0.0
    best_valid_loss: float = math.inf
    validations_without_improvement: int = 0
    planned_steps: int | None = None
    """Where a cosine schedule without ``max_steps`` ends: planned from the speed over the warm-up."""
    onednn_products: bool | None = None
    """fp32 CPU runs: whether the products run on oneDNN, measured when the run starts and kept on resume."""
    attention_kernel: str | None = None
    """CPU runs of a model with ``attention_kernel: auto``: ``fused`` or ``reference`` (the formula),
    measured when the run starts and kept on resume; None: the model's own rule."""
    packed_dropout: bool | None = None
    """CPU runs: whether dropout draws packed random numbers (:class:`~transformerkit.nn.dropout.Dropout`)
    rather than ``nn.Dropout``'s, measured when the run starts and kept on resume; None: the
    model's dropout modules as built."""
    planned_warmup: int | None = None
    """With ``training.warmup_share``: the warm-up's length, planned before the first step."""
    planned_save_every: int | None = None
    """With ``training.save_share``: steps between checkpoints, planned before the first step."""
    precision: str | None = None
    """``fp32`` or ``bf16``: what ``training.precision`` (``auto`` included) resolved to when the run started."""
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    stopped_because: str
    last_validation: dict[str, Any] | None


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


def _stack_optimizer_states(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Adam's state of separate Q/K/V projections as the fused projection's: moments stacked, one step count."""
    return {key: torch.cat([p[key] for p in parts]) if parts[0][key].dim() else parts[0][key] for key in parts[0]}


class _LogWindow:
    """Mean loss and target tokens per second of training (validation and saving excluded) over the
    steps since the last ``train`` log record."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens, self.loss, self.steps, self.start = 0, 0.0, 0, time.perf_counter()

    def add(self, loss: float, tokens: int) -> None:
        self.tokens, self.loss, self.steps = self.tokens + tokens, self.loss + loss, self.steps + 1

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` spent outside training out of the rate."""
        self.start += seconds

    def tokens_per_second(self) -> float:
        return self.tokens / (time.perf_counter() - self.start)


class _TaskLoss(nn.Module):
    """The task's loss as a module's forward, so DDP and FSDP see one forward and backward per
    micro-batch whichever model method the task calls."""

    def __init__(self, task: TrainingTask) -> None:
        super().__init__()
        self.model = task.model
        self.task = task

    def forward(self, batch: Any) -> Tensor:
        return self.task.loss(batch)


class Trainer:
    def __init__(self, run: RunConfig[Any], resume: bool = False) -> None:
        self.run = run
        t = run.training
        self.out = Path(t.output_dir)
        self.checkpoints = self.out / "checkpoints"
        for directory in (self.out, self.checkpoints):  # found now, not at the first save
            if directory.exists() and not directory.is_dir():
                raise ValueError(f"{directory} is a file, not a directory: choose another training.output_dir")
        if not resume and (self.checkpoints / "latest").exists():
            raise ValueError(f"{self.out} already holds a training run: pass --resume to continue it, "
                             f"or choose another training.output_dir")
        if resume and not (self.checkpoints / "latest").exists():
            raise ValueError(f"{self.out}: nothing to resume (no checkpoints/latest)")
        self.dist = Distributed.from_environment(t.device, t.distributed)
        try:
            self.device = pick_device(t.device, self.dist.local_rank)
        except ValueError as error:
            raise ValueError(f"training.{error}") from None  # "training.device 'cuda' asked for, but …"
        torch.manual_seed(t.seed)
        self.task: TrainingTask = run.training_task(self.out, resume, self.device)
        batches = self.task.epoch_batches(0)
        if not batches:  # the loop would go round empty epochs forever
            raise ValueError(f"{run.data.train}: no training examples left to batch "
                             f"({', '.join(f'{k} {v}' for k, v in self.task.data_report.items())})")
        if len(batches) > 1 and all(isinstance(b, list) and len(b) == 1 for b in batches):
            warnings.warn(f"training.max_tokens {t.max_tokens} holds one example per batch (each is longer): "
                          f"raise it, batches of one example train slowly and noisily", stacklevel=2)
        if not resume and self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "run.yaml").write_text(yaml.safe_dump(run.to_dict(), sort_keys=False), encoding="utf-8")
        self.model, self.tokenizer = self.task.model, self.task.tokenizer
        if resume:
            self._load_latest_weights()
        self.progress = Progress()
        self.loss_module = _TaskLoss(self.task)
        # measured on the plain model (rank 0), before DDP or FSDP wrap it; a resumed run keeps its own
        self.precision_choice = None if resume else self._choose_precision()
        layers = [m for m in self.model.modules() if isinstance(m, TransformerLayer)]
        self.trained = self.dist.wrap(self.loss_module, layers, self.device)
        # fused: one kernel for the whole update (a base-shape bf16 step on 2 CPU cores: 55 → 19 ms)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1.0, betas=t.adam_betas, eps=t.adam_eps,
                                          weight_decay=t.weight_decay, fused=self.device.type in ("cpu", "cuda"))
        # (step, elapsed seconds) half-way through the warm-up, where the cosine plan measures speed
        # from; (0, 0) until then, and for a run resumed in the warm-up's second half
        self._half_warmup = (0, 0.0)
        self._session_start = time.perf_counter()  # where this session's training time counts from
        self.scheduler = inverse_sqrt_scheduler(self.optimizer, self.model.config.d_model, t.warmup_steps, t.lr_scale,
                                                total_steps=self._decay_end if t.schedule == "cosine" else None,
                                                ramp=lambda: self.progress.planned_warmup)
        if resume:
            self._restore(self.checkpoints / "latest")
            self._keep_precision()
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.progress.precision == "bf16"
                         else nullcontext())
        self.speed_choices = self._choose_speed_measures(measure=not resume)
        self._start_plan: dict[str, Any] | None = None  # for the log
        if not resume:
            self._plan_start()

    # --------------------------------------------------------------------------- checkpoints
    def _load_latest_weights(self) -> None:
        """The weights of ``checkpoints/latest``; a model of other shape is named by the settings that differ."""
        latest = self.checkpoints / "latest"
        try:
            load_weights(self.model, latest / "model.safetensors")
        except WeightsMismatch:
            try:
                saved = json.loads((latest / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {}
            now = self.model.config.to_dict()
            differ = [f"model.{key} {saved[key]!r} in the run, {value!r} now" for key, value in now.items()
                      if isinstance(saved, dict) and key in saved and saved[key] != value]
            raise CheckpointError(f"{latest} does not fit this run's model ({'; '.join(differ) or 'other tensors'}): "
                                  f"resume with the run's own recipe, transformerkit train {self.out / 'run.yaml'} "
                                  f"--resume") from None

    def _state(self) -> dict[str, Any]:
        """The training state, the same for any number of processes (optimizer keyed by parameter name)."""
        p = self.progress
        state: dict[str, Any] = {
            "optimizer": self.dist.optimizer_state(self.loss_module, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "progress": {"step": p.step, "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch,
                         "elapsed_seconds": p.elapsed_seconds, "best_valid_loss": p.best_valid_loss,
                         "validations_without_improvement": p.validations_without_improvement,
                         "planned_steps": p.planned_steps, "planned_warmup": p.planned_warmup,
                         "planned_save_every": p.planned_save_every,
                         "onednn_products": p.onednn_products, "attention_kernel": p.attention_kernel,
                         "packed_dropout": p.packed_dropout,
                         "precision": p.precision,
                         "history": json.dumps(p.history)},
            "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _restore(self, directory: Path) -> None:
        """Optimizer, schedule, progress and RNG from a checkpoint (the weights are already loaded);
        what a killed save left beside the checkpoints is removed."""
        remove_stale_temporaries(self.checkpoints)
        state = load_training_state(directory)
        try:
            optimizer = state["optimizer"]
            if all(isinstance(k, int) for k in optimizer["state"]):  # written before states were keyed by name
                self.optimizer.load_state_dict(optimizer)
            else:
                names = [f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad]
                fuse_legacy_projections(names, optimizer["state"], _stack_optimizer_states)
                for group in optimizer["param_groups"]:
                    if any(name not in group["params"] for name in names):  # renamed by the fusion
                        group["params"] = names
                self.dist.load_optimizer_state(self.loss_module, self.optimizer, optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
            saved = dict(state["progress"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{directory}: training state does not fit this run ({error})") from None
        saved["history"] = json.loads(saved["history"])
        # checkpoints from before planned_steps have none (None); those from before the measured
        # choice were trained with oneDNN products wherever oneDNN was available
        saved.setdefault("onednn_products", ONEDNN_AVAILABLE)
        # before the attention and dropout measures: the model's own kernel rule and dropout modules
        saved.setdefault("attention_kernel", None)
        saved.setdefault("packed_dropout", None)
        # and before ``auto`` existed, the recipe said fp32 or bf16
        saved.setdefault("precision", None if self.run.training.precision == "auto" else self.run.training.precision)
        self.progress = Progress(**saved)
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def _warmup_steps(self) -> int:
        """The warm-up's length: planned (``warmup_share``), else ``warmup_steps``."""
        return self.progress.planned_warmup or self.run.training.warmup_steps

    def _save_every(self) -> int:
        """Steps between checkpoints: planned (``save_share``), else ``save_every``, else ``validate_every``."""
        t = self.run.training
        return self.progress.planned_save_every or t.save_every or t.validate_every

    def _plan_start(self) -> None:
        """``training.warmup_share`` / ``save_share``: size the warm-up and the checkpoint interval
        to the steps this run will take — ``max_steps``, or the steps ``max_minutes`` holds at the
        speed of this model's own training step (forward and backward of the first batch in the
        run's precision and kernels, timed here before the first step, without a trace; validation
        and checkpoints not counted, so the estimate errs long) — at most ``warmup_steps`` and
        ``save_every``."""
        t, p = self.run.training, self.progress
        if t.warmup_share is None and t.save_share is None:
            return
        seconds_per_step = None
        if t.max_steps is not None:
            steps = t.max_steps
        else:
            assert t.max_minutes is not None  # the recipe's validation
            batches = self.task.epoch_batches(0)[:t.accumulate]
            self._trial_step(self.trained, batches, self.autocast)  # the first step allocates and picks kernels
            started = time.perf_counter()
            for _ in range(2):
                self._trial_step(self.trained, batches, self.autocast)
            seconds_per_step = self.dist.from_main((time.perf_counter() - started) / 2)
            steps = int(60 * t.max_minutes / seconds_per_step)
        planned = []
        if t.warmup_share is not None:
            p.planned_warmup = max(1, min(t.warmup_steps, round(t.warmup_share * steps)))
            planned.append(f"warm-up {p.planned_warmup} steps ({t.warmup_share:g}, at most {t.warmup_steps})")
        if t.save_share is not None:
            most = self._save_every()  # nothing planned yet: the recipe's interval
            p.planned_save_every = max(1, min(most, round(t.save_share * steps)))
            planned.append(f"a checkpoint every {p.planned_save_every} steps ({t.save_share:g}, at most {most})")
        self._start_plan = {"event": "plan_start", "step": 0, "steps_expected": steps,
                            "seconds_per_step": seconds_per_step, "warmup_steps": p.planned_warmup,
                            "save_every": p.planned_save_every}
        if self.dist.is_main:
            speed = f" at {seconds_per_step:.3f} s/step" if seconds_per_step else ""
            print(f"plan for ~{steps} steps{speed}: {'; '.join(planned)}", file=sys.stderr)

    @functools.cached_property
    def _trial_batch(self) -> Any:
        """The batch that speed measurements time: the run's first batch, made only if a
        measurement needs it. (A slice of it misled: on an Intel Xeon with AMX, 16 of the en→de
        recipe's 64 sentences ran no faster in bf16, the whole batch did.)"""
        return self.task.epoch_batches(0)[0]

    def _trial_shape(self, what: str) -> str:
        """The shape class under which a measurement of :attr:`_trial_batch` is cached."""
        parameters = sum(p.numel() for p in self.model.parameters())
        return f"{self.model.model_type}, {parameters:,} parameters, a batch of {len(self._trial_batch)} {what}"

    def _trial_step(self, module: nn.Module, batches: list[Any], autocast: AbstractContextManager[Any]) -> None:
        """Forward and backward of ``batches`` through ``module`` (the loss, wrapped or not) as
        :meth:`_step` runs them, but without the update and without a trace: gradients cleared,
        the random stream (dropout) put back. For timing."""
        rng = torch.get_rng_state()
        for batch in batches:
            share, weight = self.dist.share(batch)
            prepared = self.task.prepare(share)
            with autocast:
                loss = module(prepared) * (weight / max(prepared.tokens, 1))
            loss.backward()
        self.model.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)

    def _choose_precision(self) -> Choice:
        """Resolve ``training.precision`` for a new run (``auto``: measured on this machine, see
        :func:`~transformerkit.backends.calibration.choose_precision`); log it, and warn when an
        explicit bf16 is emulated here. Every process takes rank 0's choice."""
        wish = self.run.training.precision
        if self.device.type == "cuda":
            bf16 = wish == "bf16" or (wish == "auto" and torch.cuda.is_bf16_supported())
            choice = Choice(bf16, f"training.precision: {wish} on {torch.cuda.get_device_name(self.device)}", {})
        elif self.dist.is_main:
            choice = choose_precision(wish, self._trial_shape("forward+backward"), lambda bf16: self._trial_step(
                self.loss_module, [self._trial_batch], torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                                      enabled=bf16)))
        else:
            choice = Choice(False, "", {})
        choice = self.dist.from_main(choice)
        self.progress.precision = "bf16" if choice.use else "fp32"
        if self.dist.is_main:
            timings = choice.timings_ms
            if wish == "bf16" and "fp32" in timings and not machine.native_bf16():
                print(f"warning: training.precision bf16 is emulated on this CPU (no AMX, no AVX512-BF16): a step "
                      f"measured {timings['bf16'] / timings['fp32']:.1f}× slower than fp32 "
                      f"({timings['bf16']:.0f} vs {timings['fp32']:.0f} ms); precision: auto picks fp32 here",
                      file=sys.stderr)
            elif wish == "auto":
                print(f"precision: {self.progress.precision} ({choice.reason})", file=sys.stderr)
        return choice

    def _keep_precision(self) -> None:
        """A resumed run trains in the precision it started with (exact resume), unless the recipe
        now names one explicitly."""
        wish = self.run.training.precision
        if wish != "auto":
            self.progress.precision = wish
        self.precision_choice = Choice(self.progress.precision == "bf16",
                                       "kept from the start of the run" if wish == "auto" else f"training.precision: {wish}",
                                       {})

    def _choose_speed_measures(self, measure: bool) -> dict[str, Choice]:
        """Apply the speed measures that fit this run on a CPU, each taken where the model's own
        step measures faster with it here (``measure``: a new run; :mod:`.speed_measures`). A
        resumed run keeps its first choices, so that it continues exactly (the process's memory
        retention, which changes no result, is measured again); a distributed run measures oneDNN
        products on the largest weight shape (DDP/FSDP hold the model by now), leaves attention
        and dropout as the model has them and keeps freed memory."""
        p = self.progress
        assert self.precision_choice is not None
        choices = {"precision": self.precision_choice}
        if self.device.type != "cpu":
            return choices
        if self.dist.enabled:  # each rank keeps its freed memory, unmeasured (the step runs under DDP/FSDP)
            set_freed_memory_retained(True)
        else:  # the process's choice: changes no result, measured again on resume
            choices["retained_memory"] = choose_memory_retention(**self._own_step())
        if measure and not self.dist.enabled:
            measured = choose_training_measures(self.model, p.precision, **self._own_step())
            if "onednn_products" in measured:
                p.onednn_products = measured["onednn_products"].use
            if "attention_formula" in measured:
                p.attention_kernel = "reference" if measured["attention_formula"].use else "fused"
            if "packed_dropout" in measured:
                p.packed_dropout = measured["packed_dropout"].use
            return choices | measured
        kept = {"onednn_products": p.onednn_products if p.precision == "fp32" else None,  # bf16: oneDNN already
                "packed_dropout": p.packed_dropout,
                "attention_formula": None if p.attention_kernel is None else p.attention_kernel == "reference"}
        if p.precision == "fp32" and p.onednn_products is None:  # a new distributed run
            choice = choose_onednn_products(self.model)
            p.onednn_products = kept["onednn_products"] = bool(self.dist.from_main(choice.use))  # every rank alike
            choices["onednn_products"] = choice
        if kept["onednn_products"]:
            use_onednn_products(self.model)
        if p.attention_kernel is not None:
            use_attention_kernel(self.model, p.attention_kernel)  # the configuration keeps saying auto
        if p.packed_dropout is not None:
            use_packed_dropout(self.model, p.packed_dropout)
        return {name: Choice(use, "kept from the start of the run", {}) for name, use in kept.items()
                if use is not None} | choices

    def _own_step(self) -> dict[str, Any]:
        """The model's own training step for a measurement (``step``, without a trace) and the
        ``shape`` class it is cached under: :attr:`_trial_batch` in the run's precision."""
        return {"shape": self._trial_shape(f"{self.progress.precision} forward+backward"),
                "step": lambda: self._trial_step(self.loss_module, [self._trial_batch], self.autocast)}

    def _full_model(self) -> nn.Module | None:
        """The model with all its weights on rank 0 (FSDP gathers the shards: every rank must call); None elsewhere."""
        if not (self.dist.enabled and self.dist.strategy == "fsdp"):
            return self.model if self.dist.is_main else None
        state = {k.removeprefix("model."): v for k, v in self.dist.model_state(self.loss_module).items()}
        if not self.dist.is_main:
            return None
        full = type(self.model)(self.model.config)
        full.load_state_dict(state)
        return full.to(self.device)

    def save(self) -> Path:
        """Write a checkpoint (rank 0; the others wait) and return its directory."""
        directory = self.checkpoints / f"step-{self.progress.step:08d}"
        model, state = self._full_model(), self._state()
        if model is not None:
            save_checkpoint(directory, model, self.tokenizer, self.task.generation, state, self.run.task)
            self._prune()
        barrier()
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
        """One optimizer step over ``batches`` (gradient accumulation; on several processes each takes
        its share of every batch); returns (mean loss, target tokens), both over all processes."""
        shares = [self.dist.share(b) for b in batches]
        prepared = [(self.task.prepare(share), weight) for share, weight in shares]
        local_tokens = sum(p.tokens * weight for p, weight in prepared)
        tokens = self.dist.sum([local_tokens])[0]
        scale = self.dist.world_size / tokens  # DDP and FSDP average the gradients over processes
        total = 0.0
        for i, (batch, weight) in enumerate(prepared):
            with self.dist.accumulating(self.trained, last=i == len(prepared) - 1):
                with self.autocast:
                    loss = self.trained(batch) * (weight * scale)
                loss.backward()
            total += loss.item() / self.dist.world_size
        if self.run.training.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.training.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.dist.sum([total])[0], int(tokens)

    def _decay_end(self) -> int | None:
        """The step a cosine schedule reaches 0 at: ``max_steps``, else the plan (None before it is made)."""
        return self.run.training.max_steps or self.progress.planned_steps

    def _elapsed(self) -> float:
        """Seconds this run has trained, over all its sessions (resumes) until now."""
        return self.progress.elapsed_seconds + time.perf_counter() - self._session_start

    def _bank_elapsed(self) -> None:
        """Move the current session's seconds into ``progress`` (before a checkpoint stores it)."""
        now = time.perf_counter()
        self.progress.elapsed_seconds += now - self._session_start
        self._session_start = now

    def _plan_steps(self, log: JsonlLog) -> None:
        """At the end of the warm-up of a cosine run without ``max_steps``: the steps that fit in
        ``max_minutes`` at the speed of the warm-up's second half (validation and checkpoints
        included; the first steps, slowed by allocation and kernel selection, are left out),
        agreed by every process (rank 0's clock)."""
        t, p = self.run.training, self.progress
        if t.schedule != "cosine" or t.max_steps is not None or p.planned_steps is not None:
            return
        elapsed = self._elapsed()
        warmup = self._warmup_steps()
        if p.step == warmup // 2:
            self._half_warmup = (p.step, elapsed)
        if p.step < warmup:
            return
        assert t.max_minutes is not None  # the recipe's validation
        since_step, since = self._half_warmup
        seconds_per_step = (elapsed - since) / (p.step - since_step)
        planned = p.step + int((60 * t.max_minutes - elapsed) / seconds_per_step)
        p.planned_steps = self.dist.from_main(max(p.step, planned))
        log.write({"event": "plan", "step": p.step, "planned_steps": p.planned_steps,
                   "seconds_per_step": seconds_per_step})

    def _stop_reason(self, stop: _StopRequest) -> str | None:
        t, p = self.run.training, self.progress
        if stop.signal is not None:
            return "interrupted"
        if t.max_steps is not None and p.step >= t.max_steps:
            return "max_steps"
        if p.planned_steps is not None and p.step >= p.planned_steps:
            return "planned_steps"
        if t.max_epochs is not None and p.epoch >= t.max_epochs:
            return "max_epochs"
        if t.max_minutes is not None and self._elapsed() >= 60 * t.max_minutes:
            return "max_minutes"
        if t.patience is not None and p.validations_without_improvement >= t.patience:
            return "early_stopping"
        return None

    def _agreed_stop_reason(self, stop: _StopRequest) -> str | None:
        """Rank 0's stop decision on every rank (clocks and signals differ between processes)."""
        return self.dist.from_main(self._stop_reason(stop))

    def train(self) -> TrainResult:
        """Train until a stop reason (budget, plan, epochs, early stopping, a signal), checkpointing
        on the way; then write ``model/``. Each step: optimizer step, log, validate, plan, save."""
        t, p = self.run.training, self.progress
        self.model.train()
        log = JsonlLog(self.out / "log.jsonl", self.out / "tensorboard" if t.tensorboard else None,
                       enabled=self.dist.is_main)
        log.write({"event": "start", "step": p.step, "task": self.run.task, **self.task.data_report,
                   "parameters": sum(x.numel() for x in self.model.parameters()), "device": str(self.device),
                   "processes": self.dist.world_size,
                   "speed_choices": {name: c.to_dict() for name, c in self.speed_choices.items()}})
        if self._start_plan is not None:
            log.write(self._start_plan)
        bar = tqdm(total=t.max_steps, initial=p.step, disable=not (t.progress and self.dist.is_main), unit="step",
                   dynamic_ncols=True)
        self._session_start = time.perf_counter()
        window = _LogWindow()
        last_validation: dict[str, Any] | None = p.history[-1] if p.history else None
        with _StopRequest() as stop:
            reason = self._agreed_stop_reason(stop)
            while reason is None:
                batches = self.task.epoch_batches(p.epoch)
                while reason is None and p.batch_in_epoch < len(batches):
                    group = batches[p.batch_in_epoch:p.batch_in_epoch + t.accumulate]
                    window.add(*self._step(group))
                    p.batch_in_epoch += len(group)
                    p.step += 1
                    bar.update(1)
                    if p.step % t.log_every == 0:
                        self._log_window(window, log, bar)
                    paused_at = time.perf_counter()
                    reason, validation = self._between_steps(log, stop)
                    last_validation = validation or last_validation
                    window.pause(time.perf_counter() - paused_at)  # tokens/s counts training time only
                if p.batch_in_epoch >= len(batches):
                    p.epoch += 1
                    p.batch_in_epoch = 0
                    reason = reason or self._agreed_stop_reason(stop)
            latest = self.checkpoints / "latest"
            if self.dist.from_main(not latest.exists() or latest.resolve().name != f"step-{p.step:08d}"):
                self._bank_elapsed()
                self.save()
        bar.close()
        log.write({"event": "stop", "step": p.step, "reason": reason})
        model_dir = self.finish()
        log.close()
        return TrainResult(self.out, model_dir, p.step, reason, last_validation)

    def _log_window(self, window: _LogWindow, log: JsonlLog, bar: tqdm) -> None:
        """A ``train`` record (mean loss, tokens/s since the last one) in the log and on the bar."""
        p = self.progress
        record = {"event": "train", "step": p.step, "epoch": p.epoch, "loss": window.loss / window.steps,
                  "lr": self.scheduler.get_last_lr()[0], "tokens_per_second": window.tokens_per_second(),
                  "elapsed_seconds": self._elapsed()}
        log.write(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}",
                        lr=f"{record['lr']:.2e}", eta=self._eta())
        window.reset()

    def _between_steps(self, log: JsonlLog, stop: _StopRequest) -> tuple[str | None, dict[str, Any] | None]:
        """After an optimizer step: validate when due, plan a cosine schedule's end, decide whether
        to stop, and save a checkpoint when due (every ``save_every`` steps or as planned, on a new best
        validation loss, and before stopping). Returns (stop reason, the validation record or None)."""
        t, p = self.run.training, self.progress
        validation = None
        if self.task.has_validation and p.step % t.validate_every == 0:
            validation = self._validate_and_track(log)
        self._plan_steps(log)
        reason = self._agreed_stop_reason(stop)
        improved = validation is not None and validation["improved"]
        if improved or p.step % self._save_every() == 0 or reason is not None:
            self._bank_elapsed()
            saved = self.save()
            if improved and self.dist.is_main:
                point(self.checkpoints / "best", saved)
                self._prune()
        return reason, validation

    def _eta(self) -> str:
        t, p = self.run.training, self.progress
        elapsed = self._elapsed()
        remaining = []
        if t.max_minutes is not None:
            remaining.append(60 * t.max_minutes - elapsed)
        end = self._decay_end()
        if end is not None and p.step:
            remaining.append(elapsed / p.step * (end - p.step))
        if not remaining:
            return "?"
        seconds = max(0, int(min(remaining)))
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _validate_and_track(self, log: JsonlLog) -> dict[str, Any]:
        p = self.progress
        result = None
        model = self._full_model()  # FSDP: gathered from every rank's shard
        if model is not None:  # rank 0 validates, the others wait
            training_model, self.task.model = self.task.model, model
            model.eval()
            try:
                result = self.task.validate(self.autocast)
            finally:
                self.task.model = training_model
                training_model.train()
        result = self.dist.from_main(result)
        improved = result["valid_loss"] < p.best_valid_loss
        if improved:
            p.best_valid_loss = result["valid_loss"]
            p.validations_without_improvement = 0
        else:
            p.validations_without_improvement += 1
        record = {"event": "valid", "step": p.step, **result, "improved": improved,
                  "elapsed_seconds": self._elapsed()}
        p.history.append(record)
        log.write(record)
        if self.dist.is_main:
            metrics = " ".join(f"{k.removeprefix('valid_')} {v:.3f}" for k, v in result.items() if isinstance(v, float))
            tqdm.write(f"step {p.step}: valid {metrics}" + (" (best)" if improved else ""))
            for key, value in result.items():
                if isinstance(value, str):
                    tqdm.write(f"{key}:\n{value}")
        return record

    def finish(self) -> Path:
        """Write ``model/`` (rank 0): the average of the last ``average_last`` checkpoints (or a copy of the last)."""
        model_dir = self.out / "model"
        if self.dist.is_main:
            average_checkpoints(sorted(self.checkpoints.glob("step-*"))[-self.run.training.average_last:], model_dir)
        barrier()
        return model_dir


class JsonlLog:
    """Metrics as JSON lines, mirrored to TensorBoard when it is installed and enabled."""

    def __init__(self, path: Path, tensorboard_dir: Path | None, enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:  # another process writes the log
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"time": time.time(), **record}) + "\n")
        self.file.flush()
        if self.writer is not None and record.get("event") in ("train", "valid"):
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()
