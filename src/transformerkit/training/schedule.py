"""Learning-rate schedules: the paper's (§5.3), and a cosine decay for runs of a known length.

    inverse-sqrt:  lrate = d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5)
    cosine:        the same linear warm-up to the same peak d_model^-0.5 · warmup_steps^-0.5, then
                   peak · ½ (1 + cos(π · (step − warmup) / (total − warmup))), reaching 0 at ``total``

A run with a wall-clock budget and no step count learns ``total`` only once it has measured its
own speed (the trainer plans it at the end of the warm-up); until then the cosine holds the peak.

A shorter warm-up ``ramp`` ≤ ``warmup_steps`` (``training.warmup_share``: a warm-up sized to the
steps the budget holds) keeps the peak that ``warmup_steps`` sets and reaches it sooner:

    peak = d_model^-0.5 · warmup_steps^-0.5
    inverse-sqrt:  lrate = peak · min(step / ramp, (ramp / step)^0.5)   (the formula above for ramp = warmup_steps)
    cosine:        peak · step / ramp up to ``ramp``, then the cosine from ``ramp`` to ``total``

Both are multiplied by ``scale`` (``training.lr_scale``) and drive an optimizer created with ``lr=1.0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def inverse_sqrt_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0, ramp: int | None = None) -> float:
    """The paper's learning rate at optimizer step ``step`` (counted from 1), its warm-up shortened
    to ``ramp`` steps at the same peak when given."""
    step, ramp = max(step, 1), ramp or warmup_steps
    return scale * (d_model * warmup_steps) ** -0.5 * min(step / ramp, (ramp / step) ** 0.5)


def cosine_lr(step: int, d_model: int, warmup_steps: int, total_steps: int | None, scale: float = 1.0,
              ramp: int | None = None) -> float:
    """Linear warm-up to the paper's peak (over ``ramp`` steps when given, else ``warmup_steps``),
    then a cosine decay to 0 at ``total_steps`` (step counted from 1); the peak while
    ``total_steps`` is not known yet (None)."""
    step, ramp = max(step, 1), ramp or warmup_steps
    peak = scale * (d_model * warmup_steps) ** -0.5
    if step <= ramp or total_steps is None:
        return peak * min(step, ramp) / ramp
    progress = min(1.0, (step - ramp) / max(total_steps - ramp, 1))
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def inverse_sqrt_scheduler(optimizer: Optimizer, d_model: int, warmup_steps: int, scale: float = 1.0,
                           total_steps: int | Callable[[], int | None] | None = None,
                           ramp: Callable[[], int | None] = lambda: None) -> LambdaLR:
    """A ``LambdaLR`` giving :func:`inverse_sqrt_lr`, or :func:`cosine_lr` when ``total_steps`` is
    given — a number, or a function asked at every step (a plan made during training, None until
    then); ``ramp`` gives a planned shorter warm-up (None: ``warmup_steps``). Create the optimizer
    with ``lr=1.0``."""
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps must be a positive integer, got {warmup_steps}")
    # LambdaLR calls the function with the number of steps taken so far (0 before the first)
    if total_steps is None:
        return LambdaLR(optimizer, lambda taken: inverse_sqrt_lr(taken + 1, d_model, warmup_steps, scale, ramp()))
    planned = total_steps if callable(total_steps) else lambda: total_steps
    return LambdaLR(optimizer, lambda taken: cosine_lr(taken + 1, d_model, warmup_steps, planned(), scale, ramp()))
