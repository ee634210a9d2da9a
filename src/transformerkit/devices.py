"""Where models run: the one rule for choosing a device, and the device a model is on."""

from __future__ import annotations

import torch
from torch import nn


def pick_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None): CUDA when available (this process's GPU, ``LOCAL_RANK``), else the CPU;
    ``cuda`` without a CUDA device is an error; any other name (``cpu``, ``cuda:1``) as given."""
    if name is None or name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
    try:
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (expected cpu, cuda, cuda:N, mps, …)") from None


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (a model lives on one device)."""
    return next(model.parameters()).device
