"""Issue #23's long-range benchmark (``benchmarks/long_range.py``): its tasks put each answer where
they say, and its Table 1 counts what the paper's formulas state."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "long_range.py"


@pytest.fixture(scope="module")
def long_range():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("long_range", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", ["copy", "reverse", "recall"])
@pytest.mark.parametrize("length", [16, 33])
def test_each_answer_sits_where_the_task_says(long_range, task: str, length: int) -> None:  # type: ignore[no-untyped-def]
    src, tgt_out, answer = long_range.examples(task, length, 50, torch.Generator().manual_seed(0))
    assert src.shape == (50, length - (task == "recall" and length % 2))
    assert (tgt_out[:, -1] == long_range.EOS).all()
    assert torch.equal(src.gather(1, answer), tgt_out[:, :-1])
    if task == "recall":  # the queried key stands just before its value, and nowhere else among the keys
        queried = src[:, -1:]
        assert torch.equal(src.gather(1, answer - 1), queried)
        assert ((src[:, 0:-2:2] == queried).sum(dim=1) == 1).all()


@pytest.mark.parametrize("length", [16, 64])
def test_table_one_counts_the_formulas_flops_and_the_sequential_products(long_range, length: int) -> None:  # type: ignore[no-untyped-def]
    row = long_range.table_one(length, d=32, heads=4)
    assert row["attention_flops"] == 8 * length * 32 ** 2 + 4 * length ** 2 * 32
    assert row["lstm_flops"] == 16 * length * 32 ** 2
    assert row["attention_products"] == 4  # packed Q/K/V, QKᵀ, AV, output: the same at any length
    assert row["lstm_products"] == length + 1  # the inputs' projection, then one per position
