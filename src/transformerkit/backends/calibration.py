"""Speed measures decided by measurement on the machine that runs them.

Each choice times a measure against plain PyTorch — on the model's own step where the caller
passes one, else on the model's own shapes — interleaved, and takes the measure only when its
median is at least 5 % lower:

* :func:`choose_onednn_products` (fp32 training): the model's own training step (forward and
  backward of a real batch; the trainer passes it) with ``F.linear`` and with oneDNN products, or
  else forward and backward of ``rows`` rows of the largest shape;
* :func:`choose_decoding_layout` (inference): the products of a decoding step — every weight
  shape of the model, as often as it holds it, at the few rows of a step — with plain weights and
  with oneDNN's blocked layout (:mod:`.layout`), in the model's dtype;
* :func:`choose_inference_dtype` (``--dtype auto``): the same decoding products in fp32 and in bf16;
* :func:`choose_int8_engine` (``--dtype int8``): the same products in int8 on PyTorch's default
  quantized engine (``x86``: FBGEMM) and on oneDNN's (AMX-INT8 kernels on an Intel Xeon with AMX);
* :func:`choose_bf16_attention_upcast` (bf16 decoding): PyTorch's fused attention of one query
  against the cache in bf16 and with q, k, v cast to fp32.

Every choice goes through :func:`choose_faster` (plain against the measure, the override, the
cache); :func:`choose_by_step` times a switch on the model's own training step — what
:mod:`transformerkit.training.speed_measures` does for the attention formula, dropout's packed
random numbers and malloc's retention of freed memory.

Precision is chosen the same way: :func:`choose_precision` (``training.precision: auto``) times
the model's own training step — forward and backward of a real batch — in fp32 and under bf16
autocast. bf16 is considered only where the processor multiplies bf16 in hardware
(:func:`~transformerkit.backends.machine.native_bf16`); elsewhere it is emulated, many times
slower than fp32, and ``auto`` takes fp32 without measuring.

A choice costs well under a second, and is kept per processor model, torch version and shape in
``speed-choices.json`` under the user's cache directory (``platformdirs``; the environment
variable ``TRANSFORMERKIT_CACHE`` moves it), so that every run on a machine takes the same
kernels and repeats exactly. The environment variables of :data:`OVERRIDES` (``on`` / ``off``,
default ``auto``; the command line's ``--speed NAME=on|off`` sets them) override them.
"""

from __future__ import annotations

import copy
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

from transformerkit.backends import machine
from transformerkit.backends.layout import DecodingLinear, use_decoding_layout
from transformerkit.backends.machine import isa_flags, processor
from transformerkit.backends.onednn import ONEDNN_AVAILABLE, onednn_linear, use_onednn_products, use_plain_products
from transformerkit.backends.quantization import quantize_linear_int8

OVERRIDE = "TRANSFORMERKIT_ONEDNN_PRODUCTS"
LAYOUT_OVERRIDE = "TRANSFORMERKIT_DECODING_LAYOUT"
ATTENTION_OVERRIDE = "TRANSFORMERKIT_ATTENTION_FORMULA"
DROPOUT_OVERRIDE = "TRANSFORMERKIT_PACKED_DROPOUT"
INT8_OVERRIDE = "TRANSFORMERKIT_ONEDNN_INT8"
MEMORY_OVERRIDE = "TRANSFORMERKIT_RETAIN_FREED_MEMORY"
UPCAST_OVERRIDE = "TRANSFORMERKIT_BF16_ATTENTION_UPCAST"
OVERRIDES = {"onednn-products": OVERRIDE, "decoding-layout": LAYOUT_OVERRIDE, "attention-formula": ATTENTION_OVERRIDE,
             "packed-dropout": DROPOUT_OVERRIDE, "onednn-int8": INT8_OVERRIDE, "retain-freed-memory": MEMORY_OVERRIDE,
             "bf16-attention-upcast": UPCAST_OVERRIDE}
"""Each measure's name (``transformerkit --speed NAME=on|off``) → the environment variable that overrides it."""
CACHE = "TRANSFORMERKIT_CACHE"
MARGIN = 0.95
"""A measure is taken when its median time is below this share of plain PyTorch's."""


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


def _override(variable: str) -> str:
    wish = os.environ.get(variable, "auto").lower()
    if wish not in ("auto", "on", "off"):
        raise ValueError(f"{variable} must be auto, on or off, got {wish!r}")
    return wish


def _largest_linear(model: nn.Module) -> nn.Linear | None:
    """The ``nn.Linear`` shape holding the most weights in ``model`` (one module of it), or None."""
    weights: Counter[tuple[int, int]] = Counter()
    first: dict[tuple[int, int], nn.Linear] = {}
    for m in model.modules():
        if isinstance(m, nn.Linear):
            weights[(m.in_features, m.out_features)] += m.in_features * m.out_features
            first.setdefault((m.in_features, m.out_features), m)
    return first[weights.most_common(1)[0][0]] if weights else None


def _measurable(variable: str, model: nn.Module) -> Choice | nn.Linear:
    """The choice made without measuring (no oneDNN, the override ``variable`` set, no linear
    map), or else the linear map of the shape to measure."""
    wish = _override(variable)
    if not ONEDNN_AVAILABLE:
        return Choice(False, "this PyTorch build has no oneDNN", {})
    if wish != "auto":
        return Choice(wish == "on", f"{variable}={wish}", {})
    largest = _largest_linear(model)
    return Choice(False, "the model has no linear maps", {}) if largest is None else largest


def _measured(key: str, what: str, plain: Callable[[], None], measure: Callable[[], None], names: tuple[str, str],
              rounds: int) -> Choice:
    """The kept choice for ``key``, else: time ``plain`` and ``measure`` interleaved after a warm-up,
    take the measure when its median is below ``MARGIN`` of plain's, and keep that."""
    saved = _cached().get(key)
    if isinstance(saved, dict) and isinstance(saved.get("use"), bool):
        timings = dict(saved.get("timings_ms", {}))
        return Choice(saved["use"], f"{saved.get('reason')} (kept in {cache_file()})", timings)
    plain()  # warm-up: first calls allocate and pick kernels
    measure()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        times[names[0]].append(_milliseconds(plain))
        times[names[1]].append(_milliseconds(measure))
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    faster = medians[names[1]] < MARGIN * medians[names[0]]
    choice = Choice(faster, f"measured on {what}: {names[1]} {'faster' if faster else 'not 5 % faster'}", medians)
    _remember(key, choice)
    return choice


def choose_onednn_products(model: nn.Module, rows: int = 1024, rounds: int = 5,
                           step: Callable[[], None] | None = None, shape: str = "") -> Choice:
    """Whether :func:`~transformerkit.backends.onednn.use_onednn_products` speeds up fp32 CPU
    training of ``model`` here (the override first, then the measurement). With ``step`` — one
    forward and backward of the model's own training batch, ``shape`` naming it for the cache —
    that step is timed with the products on ``F.linear`` and on oneDNN (``model`` is left on
    ``F.linear``); without, a product of the largest weight shape, ``rows`` rows, forward and
    backward. The step is the better judge: on an Intel Xeon (AMX) oneDNN won the largest product
    of the small translation model and lost its whole step (BENCHMARKS.md)."""
    largest = _measurable(OVERRIDE, model)
    if isinstance(largest, Choice):
        return largest
    if step is not None:
        return choose_by_step("oneDNN products", shape, step, lambda on: (use_onednn_products if on
                                                                           else use_plain_products)(model),
                              ("F.linear", "oneDNN"), rounds=rounds)
    d_in, d_out = largest.in_features, largest.out_features
    shape = f"{rows}×{d_in}→{d_out} forward+backward"
    numbers = torch.Generator().manual_seed(0)  # its own: training's random stream stays as it was
    x = torch.randn(rows, d_in, generator=numbers).requires_grad_()
    weight = torch.randn(d_out, d_in, generator=numbers).requires_grad_()
    bias = torch.randn(d_out, generator=numbers).requires_grad_()
    grad = torch.randn(rows, d_out, generator=numbers)

    def product_step(product: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Callable[[], None]:
        return lambda: product(x, weight, bias).backward(grad)

    return choose_faster("oneDNN products", shape, product_step(F.linear), product_step(onednn_linear),
                         ("F.linear", "oneDNN"), rounds=rounds)


def choose_faster(measure: str, shape: str, plain: Callable[[], None], candidate: Callable[[], None],
                  names: tuple[str, str], override: str | None = None, rounds: int = 3) -> Choice:
    """Whether ``candidate`` (a measure) runs at least 5 % faster here than ``plain`` (plain
    PyTorch), both doing the same work on ``shape`` (named for the cache): timed interleaved after
    a warm-up, kept. ``override``: the environment variable that decides without measuring."""
    wish = _override(override) if override else "auto"
    if wish != "auto":
        return Choice(wish == "on", f"{override}={wish}", {})
    return _measured(f"{_machine_key()}{measure} | {shape}", shape, plain, candidate, names, rounds)


def choose_by_step(measure: str, shape: str, step: Callable[[], None], switch: Callable[[bool], object],
                   names: tuple[str, str], override: str | None = None, rounds: int = 3) -> Choice:
    """Whether ``measure`` makes the model's own step faster here: ``step`` (forward and backward
    of a real batch; ``shape`` names it for the cache) is timed with the measure off and on —
    ``switch(on)`` sets it on the model, which is left with it off — interleaved, and the measure
    is taken when 5 % faster (:func:`choose_faster`)."""
    def switched(on: bool) -> Callable[[], None]:
        def run() -> None:
            switch(on)
            try:
                step()
            finally:
                switch(False)
        return run
    return choose_faster(measure, shape, switched(False), switched(True), names, override, rounds)


@dataclass(frozen=True)
class DecodingProducts:
    """The matrix products of one decoding step of a model, on stand-in weights: one random
    ``nn.Linear`` per weight shape, called as many times as the model holds that shape, with
    inputs of each row count in ``rows`` (one sequence, a batch, beams). Timing these stands for
    timing the step: at one row the layers' products can lose where the largest one wins
    (BENCHMARKS.md), so every shape is in."""

    linears: dict[tuple[int, int], nn.Linear]
    counts: dict[tuple[int, int], int]
    inputs: list[dict[tuple[int, int], Tensor]]
    description: str

    @classmethod
    def of(cls, model: nn.Module, rows: tuple[int, ...], dtype: torch.dtype) -> DecodingProducts:
        counts = Counter((m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear))
        numbers = torch.Generator().manual_seed(0)  # its own: a seeded sampler's random stream stays as it was
        linears = {}
        for d_in, d_out in counts:
            linear = nn.utils.skip_init(nn.Linear, d_in, d_out, dtype=dtype).requires_grad_(False)
            with torch.no_grad():
                linear.weight.copy_(torch.randn(d_out, d_in, generator=numbers))
                linear.bias.zero_()
            linears[(d_in, d_out)] = linear
        inputs = [{shape: torch.randn(n, shape[0], generator=numbers).to(dtype) for shape in counts} for n in rows]
        weights = sum(d_in * d_out * n for (d_in, d_out), n in counts.items())
        description = (f"{'/'.join(map(str, rows))} rows × one decoding step's products ({sum(counts.values())} "
                       f"maps, {len(counts)} shapes, {weights / 1e6:.1f} M weights) {str(dtype).removeprefix('torch.')}")
        return cls(linears, dict(counts), inputs, description)

    def step(self, transform: Callable[[nn.Linear], nn.Module] = lambda linear: linear, steps: int = 3,
             dtype: torch.dtype | None = None) -> Callable[[], None]:
        """``steps`` decoding steps' products at each row count, through ``transform(linear)`` of
        each stand-in (made once, here), with the inputs in ``dtype`` (default: as made)."""
        modules = {shape: transform(linear) for shape, linear in self.linears.items()}
        inputs = [{shape: x if dtype is None else x.to(dtype) for shape, x in by_shape.items()}
                  for by_shape in self.inputs]

        def run() -> None:
            with torch.inference_mode():
                for by_shape in inputs:
                    for _ in range(steps):
                        for shape, count in self.counts.items():
                            for _ in range(count):
                                modules[shape](by_shape[shape])
        return run


def choose_decoding_layout(model: nn.Module, rows: tuple[int, ...] = (1, 8), rounds: int = 5) -> Choice:
    """Whether :func:`~transformerkit.backends.layout.use_decoding_layout` speeds up decoding with
    ``model`` here: the products of a decoding step (:class:`DecodingProducts`) at each row count
    in ``rows``, in the model's dtype, with plain weights and in the blocked layout."""
    _override(LAYOUT_OVERRIDE)  # a wrong value is refused whatever the model
    weight = next(model.parameters(), None)
    if weight is None or weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16):
        return Choice(False, "the layout is for fp32 and bf16 models on a CPU", {})
    if weight.dtype == torch.bfloat16 and not machine.onednn_bf16_weights():
        return Choice(False, "oneDNN cannot hold bf16 weights on this CPU (no AVX512BW/VL/DQ or AVX-NE-CONVERT)", {})
    largest = _measurable(LAYOUT_OVERRIDE, model)
    if isinstance(largest, Choice):
        return largest
    products = DecodingProducts.of(model, rows, weight.dtype)
    return choose_faster("decoding layout", products.description, products.step(), products.step(DecodingLinear),
                         ("plain weights", "blocked layout"), rounds=rounds)


def choose_inference_dtype(model: nn.Module, rows: tuple[int, ...] = (1, 8), rounds: int = 5) -> Choice:
    """Whether to decode with ``model`` in bf16 (``use``) rather than fp32 here (``--dtype auto``):
    only where the processor multiplies bf16 in hardware and the products of a decoding step
    (:class:`DecodingProducts`) at ``rows`` rows measure faster in bf16 (plain weights both)."""
    weight = next(model.parameters(), None)
    if weight is None or weight.device.type != "cpu":
        return Choice(False, "bf16 decoding is chosen by measurement on a CPU only", {})
    if not machine.native_bf16():
        return Choice(False, "this CPU has no bf16 hardware (no AMX, no AVX512-BF16): bf16 would be emulated", {})
    if _largest_linear(model) is None:
        return Choice(False, "the model has no linear maps", {})
    products = DecodingProducts.of(model, rows, torch.float32)
    return choose_faster("inference dtype", products.description, products.step(),
                         products.step(lambda linear: copy.deepcopy(linear).to(torch.bfloat16), dtype=torch.bfloat16),
                         ("fp32", "bf16"), rounds=rounds)


def choose_int8_engine(model: nn.Module, rows: tuple[int, ...] = (1, 8), rounds: int = 5) -> Choice:
    """Whether ``model``'s int8 weights (:func:`~transformerkit.backends.quantization.quantize_linear_int8`)
    should be packed for oneDNN's quantized engine (``use``) rather than PyTorch's default ``x86``
    (FBGEMM) here: the products of a decoding step (:class:`DecodingProducts`) at ``rows`` rows in
    int8 on each engine."""
    if "onednn" not in torch.backends.quantized.supported_engines:
        return Choice(False, "this PyTorch build has no oneDNN quantized engine", {})
    unmeasured = _measurable(INT8_OVERRIDE, model)
    if isinstance(unmeasured, Choice):
        return unmeasured
    products = DecodingProducts.of(model, rows, torch.float32)

    def packed_for(engine: str) -> Callable[[nn.Linear], nn.Module]:
        return lambda linear: quantize_linear_int8(nn.Sequential(copy.deepcopy(linear)), engine)
    description = products.description.removesuffix("float32") + "int8"
    return choose_faster("int8 engine", description, products.step(packed_for("x86")),
                         products.step(packed_for("onednn")), ("x86 (FBGEMM)", "oneDNN"), rounds=rounds)


def quantize_int8_where_fastest(model: nn.Module, rows: tuple[int, ...]) -> Choice:
    """:func:`~transformerkit.backends.quantization.quantize_linear_int8` on the quantized engine
    :func:`choose_int8_engine` measures faster at the ``rows`` the model decodes with; the choice."""
    choice = choose_int8_engine(model, rows)
    quantize_linear_int8(model, "onednn" if choice.use else "x86")
    return choice


def choose_bf16_attention_upcast(heads: int, head_dim: int, rows: tuple[int, ...] = (1, 8),
                                 keys: tuple[int, ...] = (64, 512), calls: int = 20, rounds: int = 5) -> Choice:
    """Whether bf16 decoding attends faster with q, k, v cast to fp32 for PyTorch's fused kernel
    (``use``; the attention kernel ``auto``'s rule) than in bf16 here: ``calls`` single-query
    attention calls — (rows, heads, 1, head_dim) against (rows, heads, keys, head_dim) — at each
    row count and cache length, both ways."""
    shape = f"{'/'.join(map(str, rows))} rows × {heads} heads × 1 query × {'/'.join(map(str, keys))} keys × {head_dim}"
    numbers = torch.Generator().manual_seed(0)  # its own: a seeded sampler's random stream stays as it was

    def bf16(*size: int) -> Tensor:
        return torch.randn(*size, generator=numbers).to(torch.bfloat16)
    cases = [(bf16(n, heads, 1, head_dim), bf16(n, heads, length, head_dim), bf16(n, heads, length, head_dim))
             for n in rows for length in keys]

    def attend(upcast: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for q, k, v in cases:
                    for _ in range(calls):
                        if upcast:
                            F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(torch.bfloat16)
                        else:
                            F.scaled_dot_product_attention(q, k, v)
        return run
    return choose_faster("bf16 attention upcast", shape, attend(False), attend(True), ("bf16", "fp32 upcast"),
                         UPCAST_OVERRIDE, rounds)


def choose_precision(wish: str, shape: str, step: Callable[[bool], None], rounds: int = 3) -> Choice:
    """The training precision (``use``: bf16 autocast, else fp32) for ``wish`` — ``training.precision``,
    ``auto``, ``fp32`` or ``bf16`` — on this machine. ``step(bf16)`` runs one forward and backward
    of the model's own training step (``shape`` describes it, for the cache key); it is timed,
    interleaved, for ``auto`` where bf16 is native (bf16 taken when at least 5 % faster) and for an
    explicit ``bf16`` where it is emulated (the timings say how much slower it is: the caller warns)."""
    if wish == "fp32":
        return Choice(False, "training.precision: fp32", {})
    native = machine.native_bf16()
    if wish == "bf16" and native:
        return Choice(True, "training.precision: bf16 (bf16 hardware on this CPU)", {})
    if wish == "auto" and not native:
        return Choice(False, "auto: this CPU has no bf16 hardware (no AMX, no AVX512-BF16), bf16 would be emulated", {})
    measured = choose_faster("training precision", shape, lambda: step(False), lambda: step(True), ("fp32", "bf16"),
                             rounds=rounds if native else 1)
    if wish == "bf16":  # emulated, asked for: trained as asked, with the measured cost
        return Choice(True, "training.precision: bf16, emulated on this CPU (no AMX, no AVX512-BF16)",
                      measured.timings_ms)
    return Choice(measured.use, f"auto: {measured.reason}", measured.timings_ms)


def use_decoding_layout_where_faster(model: nn.Module, rows: tuple[int, ...] = (1, 8)) -> Choice:
    """Apply :func:`~transformerkit.backends.layout.use_decoding_layout` to ``model`` (in place,
    for inference) where :func:`choose_decoding_layout` measures it faster at the ``rows`` its
    decoding steps will have; the choice. (The layout loses at one row and wins at several on some
    machines, BENCHMARKS.md: the caller says which it decodes with.)"""
    choice = choose_decoding_layout(model, rows)
    if choice.use:
        use_decoding_layout(model)
    return choice
