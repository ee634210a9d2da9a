"""The speed measures a training run takes on a CPU, each judged on the model's own step.

For a model about to train, three measures are timed against plain PyTorch on ``step`` — one
forward and backward of a real batch in the run's precision, without a trace — both ways
interleaved, and each is taken where it is at least 5 % faster here
(:func:`~transformerkit.backends.calibration.choose_by_step`):

==================  ==========================================  ========================================
measure             on                                          off (plain PyTorch)
==================  ==========================================  ========================================
oneDNN products     :class:`~transformerkit.backends.onednn.     ``F.linear`` (MKL); fp32 only: bf16
                    OneDNNLinear`                               autocast runs on oneDNN already
attention formula   softmax(QKᵀ/√d_k + M)·V as written           ``F.scaled_dot_product_attention``;
                    (``reference`` kernel)                      models with ``attention_kernel: auto``
packed dropout      :class:`~transformerkit.nn.dropout.Dropout`  ``nn.Dropout``; models with dropout > 0
                    (four 16-bit uniforms per 64-bit draw)
==================  ==========================================  ========================================

They are measured one after the other, each with the earlier ones applied. The trainer keeps the
choices in its checkpoints (a resumed run continues exactly); ``benchmarks/run.py`` applies them
to its "transformerkit" rows the same way.

One more measure belongs to the process, not the model: :func:`choose_memory_retention` times two
steps in a row with glibc's malloc keeping freed memory (:mod:`transformerkit.memory`) and with
its default thresholds; it changes no result, so a resumed run measures it again.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from transformerkit.backends.calibration import (ATTENTION_OVERRIDE, DROPOUT_OVERRIDE, MEMORY_OVERRIDE, Choice,
                                                 choose_by_step, choose_onednn_products)
from transformerkit.backends.onednn import use_onednn_products
from transformerkit.memory import set_freed_memory_retained
from transformerkit.models.common import TransformerModel
from transformerkit.nn.attention import use_attention_kernel
from transformerkit.nn.dropout import use_packed_dropout


def choose_training_measures(model: TransformerModel, precision: str, shape: str,
                             step: Callable[[], None]) -> dict[str, Choice]:
    """Measure and apply (in place) the measures that fit ``model`` trained in ``precision``
    (``fp32`` or ``bf16``) on a CPU; ``step`` is its training step, ``shape`` names it for the
    cache of choices. The choices by name: ``onednn_products``, ``attention_formula``, ``packed_dropout``
    (only those that apply to this model and precision)."""
    choices: dict[str, Choice] = {}
    if precision == "fp32":
        choices["onednn_products"] = choose_onednn_products(model, rounds=3, step=step, shape=shape)
        if choices["onednn_products"].use:
            use_onednn_products(model)
    if getattr(model.config, "attention_kernel", None) == "auto" and use_attention_kernel(model, "fused"):
        choice = choose_by_step("attention formula", shape, step, lambda on: use_attention_kernel(
            model, "reference" if on else "fused"), ("fused kernel", "formula"), ATTENTION_OVERRIDE)
        use_attention_kernel(model, "reference" if choice.use else "fused")  # the configuration keeps saying auto
        choices["attention_formula"] = choice
    if any(m.p > 0 for m in model.modules() if isinstance(m, nn.Dropout)):
        choice = choose_by_step("packed dropout", shape, step, lambda on: use_packed_dropout(model, on),
                                ("nn.Dropout", "packed"), DROPOUT_OVERRIDE)
        use_packed_dropout(model, choice.use)
        choices["packed_dropout"] = choice
    return choices


def choose_memory_retention(shape: str, step: Callable[[], None]) -> Choice:
    """Whether keeping freed memory in the process makes two training steps in a row (``step``
    twice: the second reuses what the first freed, or has it mapped afresh) at least 5 % faster
    here; applied. Where the C library is not glibc there is nothing to choose."""
    if not set_freed_memory_retained(False):
        return Choice(False, "malloc is not glibc's: its thresholds cannot be set", {})

    def two_steps() -> None:
        step()
        step()
    choice = choose_by_step("retained freed memory", shape, two_steps, set_freed_memory_retained,
                            ("glibc's thresholds", "retained"), MEMORY_OVERRIDE)
    set_freed_memory_retained(choice.use)
    return choice
