"""Every test session measures its own speed choices, in a private cache (not the user's).

The suite runs in parallel (pytest-xdist, ``-n auto`` in pyproject.toml): each worker process
takes an equal share of the CPU cores for its threads, so that workers do not oversubscribe them.
"""

import os
from pathlib import Path

import pytest
import torch

from transformerkit.data.parallel import read_tsv, write_tsv

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "gettext-en-de"

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // _WORKERS))


@pytest.fixture(autouse=True, scope="session")
def private_speed_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["TRANSFORMERKIT_CACHE"] = str(tmp_path_factory.mktemp("transformerkit-cache"))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the real bundled en→de corpus: 400 training, 40 validation and 30 test pairs."""
    directory = tmp_path_factory.mktemp("corpus")
    write_tsv(directory / "train.tsv", read_tsv(BUNDLED / "train.tsv.gz").pairs[:400])
    valid = read_tsv(BUNDLED / "valid.tsv.gz").pairs
    write_tsv(directory / "valid.tsv", valid[:40])
    write_tsv(directory / "test.tsv", valid[40:70])
    return directory
