"""Learning-rate schedules: the paper's (§5.3), and a cosine decay for runs of a known length.

    inverse-sqrt:  lrate = d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5)
    cosine:        the same linear warm-up to the same peak d_model^-0.5 · warmup_steps^-0.5, then
                   peak · ½ (1 + cos(π · (step − warmup) / (total − warmup))), reaching 0 at ``total``

A run with a wall-clock budget and no step count learns ``total`` only once it has measured its
own speed (the trainer plans it at the end of the warm-up); until then the cosine holds the peak.

Both are multiplied by ``scale`` (``training.lr_scale``) and drive an optimizer created with ``lr=1.0``.
"""

from __future__ import annotations

import math

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def inverse_sqrt_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """The paper's learning rate at optimizer step ``step`` (counted from 1)."""
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def cosine_lr(step: int, d_model: int, warmup_steps: int, total_steps: int | None, scale: float = 1.0) -> float:
    """Linear warm-up to the paper's peak, then a cosine decay to 0 at ``total_steps`` (step counted
    from 1); the peak while ``total_steps`` is not known yet (None)."""
    step = max(step, 1)
    if step <= warmup_steps or total_steps is None:
        return inverse_sqrt_lr(min(step, warmup_steps), d_model, warmup_steps, scale)
    progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    return inverse_sqrt_lr(warmup_steps, d_model, warmup_steps, scale) * 0.5 * (1 + math.cos(math.pi * progress))


def inverse_sqrt_scheduler(optimizer: Optimizer, d_model: int, warmup_steps: int, scale: float = 1.0,
                           total_steps: int | Callable[[], int | None] | None = None) -> LambdaLR:
    """A ``LambdaLR`` giving :func:`inverse_sqrt_lr`, or :func:`cosine_lr` when ``total_steps`` is
    given — a number, or a function asked at every step (a plan made during training, None until
    then); create the optimizer with ``lr=1.0``."""
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps must be a positive integer, got {warmup_steps}")
    # LambdaLR calls the function with the number of steps taken so far (0 before the first)
    if total_steps is None:
        return LambdaLR(optimizer, lambda taken: inverse_sqrt_lr(taken + 1, d_model, warmup_steps, scale))
    planned = total_steps if callable(total_steps) else lambda: total_steps
    return LambdaLR(optimizer, lambda taken: cosine_lr(taken + 1, d_model, warmup_steps, planned(), scale))
