"""What the model computed itself: every module's inputs and outputs during one forward pass,
captured with forward hooks (``register_forward_hook(with_kwargs=True)``), and the comparison of
the explanation's recomputed values with them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

TOLERANCE = 1e-5
"""fp32: |recomputed − model| ≤ TOLERANCE · (1 + |model|) for every element."""


class ExplanationMismatch(RuntimeError):
    """A number of the explanation differs from the model's own value: the explanation would lie."""


@dataclass
class Call:
    """One call of a module: positional inputs, keyword inputs, output (tensors detached)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any


@dataclass
class Recording:
    """Every call of every module of a model, in order, by module (a module called twice — an
    embedding shared by encoder and decoder — has two)."""

    calls: dict[int, list[Call]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    def call(self, module: nn.Module, index: int = 0) -> Call:
        found = self.calls.get(id(module), [])
        if len(found) <= index:
            raise ExplanationMismatch(f"the model did not run {self.names.get(id(module), module)!r} as the "
                                      "explanation expects")
        return found[index]

    def output(self, module: nn.Module, index: int = 0) -> Tensor:
        """The (first) tensor a module returned, without its batch dimension."""
        out = self.call(module, index).output
        return (out[0] if isinstance(out, tuple) else out)[0]

    def input(self, module: nn.Module, index: int = 0) -> Tensor:
        """The first positional input of a module, without its batch dimension."""
        return self.call(module, index).args[0][0]

    def keyword(self, module: nn.Module, name: str, index: int = 0) -> Tensor:
        """A keyword input of a module, without its batch dimension."""
        return self.call(module, index).kwargs[name][0]


@contextmanager
def recording(model: nn.Module) -> Iterator[Recording]:
    """Hooks on every named module of ``model`` while the block runs."""
    record = Recording()

    def keep(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        record.calls.setdefault(id(module), []).append(Call(_detached(args), _detached(kwargs), _detached(output)))

    record.names = {id(module): name for name, module in model.named_modules()}
    handles = [module.register_forward_hook(keep, with_kwargs=True) for module in model.modules()]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


@dataclass
class Check:
    """One comparison: the largest |recomputed − model| over the compared tensor."""

    what: str
    max_error: float
    elements: int
    allowance_used: float
    """max |Δ| / (TOLERANCE · (1 + |value|)) over the elements: ≤ 1 passes."""


@dataclass
class Checker:
    """Compares recomputed values with the model's and keeps each comparison; raises
    :class:`ExplanationMismatch` at the first that differs beyond :data:`TOLERANCE`."""

    checks: list[Check] = field(default_factory=list)

    def __call__(self, what: str, recomputed: Tensor, model_value: Tensor) -> Tensor:
        """Check and return ``recomputed`` (float64) — the value to print."""
        expected = model_value.detach().double().reshape(recomputed.shape)
        error = (recomputed - expected).abs()
        bound = TOLERANCE * (1 + expected.abs())
        worst = float(error.max()) if error.numel() else 0.0
        if not bool(torch.all(error <= bound)) or not bool(torch.isfinite(recomputed).all()):
            raise ExplanationMismatch(f"{what}: the formula gives a value {worst:.2e} away from the model's own "
                                      f"(allowed {TOLERANCE:g} · (1 + |value|)); the explanation does not describe "
                                      "this model")
        used = float((error / bound).max()) if error.numel() else 0.0
        self.checks.append(Check(what, worst, recomputed.numel(), used))
        return recomputed

    def equal(self, what: str, recomputed: list[Any], model_value: list[Any]) -> None:
        """Check that two sequences (token pieces) are identical."""
        if recomputed != model_value:
            raise ExplanationMismatch(f"{what}: the explanation gives {recomputed}, the model's tokenizer "
                                      f"{model_value}")
        self.checks.append(Check(what, 0.0, len(recomputed), 0.0))
