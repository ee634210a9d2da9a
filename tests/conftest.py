"""Every test session measures its own speed choices, in a private cache (not the user's).

The suite runs in parallel (pytest-xdist, ``-n auto`` in pyproject.toml): each worker process
takes an equal share of the CPU cores for its threads, so that workers do not oversubscribe them.
"""

import os

import pytest
import torch

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // _WORKERS))


@pytest.fixture(autouse=True, scope="session")
def private_speed_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["TRANSFORMERKIT_CACHE"] = str(tmp_path_factory.mktemp("transformerkit-cache"))
