"""Speed measures decided by measurement on the machine that runs them.

:func:`choose_onednn_products` times one training product of the model's own shape — the
``nn.Linear`` shape holding the most weights, forward and backward, ``rows`` rows — with
``F.linear`` and with oneDNN, interleaved, and takes oneDNN only when its median is at least 5 %
lower. It costs well under a second, and the decision is kept per processor model, torch version
and shape in ``speed-choices.json`` under the user's cache directory (``platformdirs``; the
environment variable ``TRANSFORMERKIT_CACHE`` moves it), so that every run on a machine takes
the same kernels and repeats exactly. ``TRANSFORMERKIT_ONEDNN_PRODUCTS`` (``on`` / ``off``,
default ``auto``) overrides it.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformerkit.backends.machine import isa_flags, processor
from transformerkit.backends.onednn import ONEDNN_AVAILABLE, onednn_linear

OVERRIDE = "TRANSFORMERKIT_ONEDNN_PRODUCTS"
CACHE = "TRANSFORMERKIT_CACHE"
MARGIN = 0.95
"""oneDNN is taken when its median time is below this share of ``F.linear``'s."""


@dataclass(frozen=True)
class Choice:
    """A measured decision, for the training log."""

    use: bool
    reason: str
    timings_ms: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"use": self.use, "reason": self.reason, "timings_ms": self.timings_ms}


def cache_file() -> Path:
    """Where measured choices are kept: ``$TRANSFORMERKIT_CACHE`` or the user's cache directory."""
    return Path(os.environ.get(CACHE) or platformdirs.user_cache_dir("transformerkit")) / "speed-choices.json"


def _machine_key() -> str:
    return f"{processor()} [{' '.join(isa_flags())}] | torch {torch.__version__} | "


def speed_choices() -> dict[str, Any]:
    """Every choice kept for this processor and torch version: key → ``Choice.to_dict()``."""
    mine = _machine_key()
    return {key.removeprefix(mine): value for key, value in _cached().items() if key.startswith(mine)}


def _cached() -> dict[str, Any]:
    try:
        values = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}
    return values if isinstance(values, dict) else {}


def _remember(key: str, choice: Choice) -> None:
    """Add one choice to the cache file (atomically; a cache that cannot be written is skipped)."""
    path = cache_file()
    values = _cached() | {key: choice.to_dict()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
            json.dump(values, f, indent=1)
        os.replace(f.name, path)
    except OSError:
        pass


def _milliseconds(step: Callable[[], None]) -> float:
    started = time.perf_counter()
    step()
    return 1000 * (time.perf_counter() - started)


def choose_onednn_products(model: nn.Module, rows: int = 1024, rounds: int = 5) -> Choice:
    """Whether :func:`~transformerkit.backends.onednn.use_onednn_products` speeds up fp32 CPU
    training of ``model`` here (the override first, then the measurement)."""
    wish = os.environ.get(OVERRIDE, "auto").lower()
    if wish not in ("auto", "on", "off"):
        raise ValueError(f"{OVERRIDE} must be auto, on or off, got {wish!r}")
    if not ONEDNN_AVAILABLE:
        return Choice(False, "this PyTorch build has no oneDNN", {})
    if wish != "auto":
        return Choice(wish == "on", f"{OVERRIDE}={wish}", {})
    weights: Counter[tuple[int, int]] = Counter()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            weights[(m.in_features, m.out_features)] += m.in_features * m.out_features
    if not weights:
        return Choice(False, "the model has no linear maps", {})
    (d_in, d_out), _ = weights.most_common(1)[0]
    shape = f"{rows}×{d_in}→{d_out} forward+backward"
    key = f"{_machine_key()}oneDNN products | {shape}"
    saved = _cached().get(key)
    if isinstance(saved, dict) and isinstance(saved.get("use"), bool):
        timings = dict(saved.get("timings_ms", {}))
        return Choice(saved["use"], f"{saved.get('reason')} (kept in {cache_file()})", timings)
    numbers = torch.Generator().manual_seed(0)  # its own: training's random stream stays as it was
    x = torch.randn(rows, d_in, generator=numbers).requires_grad_()
    weight = torch.randn(d_out, d_in, generator=numbers).requires_grad_()
    bias = torch.randn(d_out, generator=numbers).requires_grad_()
    grad = torch.randn(rows, d_out, generator=numbers)

    def step(product: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Callable[[], None]:
        return lambda: product(x, weight, bias).backward(grad)

    plain, onednn = step(F.linear), step(onednn_linear)
    plain(), onednn()  # warm-up: first calls allocate and pick kernels
    times: dict[str, list[float]] = {"F.linear": [], "oneDNN": []}
    for _ in range(rounds):
        times["F.linear"].append(_milliseconds(plain))
        times["oneDNN"].append(_milliseconds(onednn))
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    faster = medians["oneDNN"] < MARGIN * medians["F.linear"]
    choice = Choice(faster, f"measured on {shape}: oneDNN {'faster' if faster else 'not 5 % faster'}", medians)
    _remember(key, choice)
    return choice
