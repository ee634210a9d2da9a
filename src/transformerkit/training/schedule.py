"""The learning-rate schedule of §5.3.

    lrate = d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5)

Linear warm-up for ``warmup_steps`` steps, then decay proportional to the inverse square root of
the step number. Used as a multiplier on an optimizer whose base learning rate is ``scale``.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def inverse_sqrt_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """The paper's learning rate at optimizer step ``step`` (counted from 1)."""
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def inverse_sqrt_scheduler(optimizer: Optimizer, d_model: int, warmup_steps: int, scale: float = 1.0) -> LambdaLR:
    """A ``LambdaLR`` giving :func:`inverse_sqrt_lr`; create the optimizer with ``lr=1.0``."""
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps must be a positive integer, got {warmup_steps}")
    # LambdaLR calls the function with the number of steps taken so far (0 before the first)
    return LambdaLR(optimizer, lambda taken: inverse_sqrt_lr(taken + 1, d_model, warmup_steps, scale))
