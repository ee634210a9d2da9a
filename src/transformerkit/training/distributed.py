"""Multi-process training on PyTorch's own distributed engine: the same trainer on 1 or N processes.

    torchrun --nproc_per_node N [--nnodes M --rdzv-endpoint HOST:PORT …] -m transformerkit train RECIPE.yaml

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :meth:`Distributed.from_environment`
joins the process group (NCCL on CUDA, gloo on CPU). The model's loss is wrapped in
``DistributedDataParallel`` (default) or sharded with ``fully_shard`` (FSDP2,
``training.distributed: fsdp``).

One optimizer step with W processes:

    global batch b (token-based, identical on every rank) → rank r takes b[r::W]
    loss_r = W · Σ_{tokens of rank r} CE / (tokens of b, summed over ranks)
    DDP/FSDP average the gradients over ranks → ∇ = Σ_{tokens of b} ∇CE / tokens of b

which is the one-process gradient of batch b, so K steps on W processes end where K steps on one
process end (up to floating-point summation order). Positions in an epoch count global batches,
so checkpoints do not depend on W: a run saved with 2 processes resumes with 1 or 4.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

Strategy = Literal["ddp", "fsdp"]


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op on one process)."""
    if dist.is_initialized():
        dist.barrier()


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: Strategy = "ddp"

    @classmethod
    def from_environment(cls, device: str, strategy: Strategy, timeout_minutes: float = 30.0) -> Distributed:
        """One process unless torchrun's ``WORLD_SIZE`` > 1; then join (or reuse) the process group."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(strategy=strategy)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
        return cls(dist.get_rank(), world_size, local_rank, strategy)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, batch: list[Any]) -> tuple[list[Any], float]:
        """This rank's disjoint share of a global batch, and its weight: 1, or 0 for a stand-in example
        when the batch has fewer examples than ranks (every rank must still run forward and backward)."""
        mine = batch[self.rank::self.world_size]
        return (mine, 1.0) if mine else (batch[:1], 0.0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (stop decisions, validation results)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, module: nn.Module, layers: list[nn.Module], device: torch.device) -> nn.Module:
        """``module`` under DDP, or sharded with ``fully_shard`` (each of ``layers`` a unit, then the
        whole); unchanged on one process."""
        if not self.enabled:
            return module
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard
            for layer in layers:
                fully_shard(layer)
            return fully_shard(module)
        return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    @contextmanager
    def accumulating(self, wrapped: nn.Module, last: bool) -> Iterator[None]:
        """Skip the gradient all-reduce for every micro-batch but the ``last`` of an optimizer step."""
        if not self.enabled:
            yield
        elif self.strategy == "fsdp":
            from torch.distributed.fsdp import FSDPModule
            assert isinstance(wrapped, FSDPModule)  # what ``wrap`` returned
            wrapped.set_requires_gradient_sync(last)
            yield
        else:
            assert isinstance(wrapped, nn.parallel.DistributedDataParallel)
            with nullcontext() if last else wrapped.no_sync():
                yield

    # ---------------------------------------------------------------- world-size independent states
    def model_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The full state dict (on rank 0; FSDP gathers the shards, which every rank must call)."""
        if self.enabled and self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return model.state_dict()

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer state keyed by parameter names (the same on any number of processes)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
        options = StateDictOptions(full_state_dict=True, cpu_offload=True) if self.strategy == "fsdp" and \
            self.enabled else None
        return get_optimizer_state_dict(model, optimizer, options=options)

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        options = StateDictOptions(full_state_dict=True) if self.strategy == "fsdp" and self.enabled else None
        set_optimizer_state_dict(model, optimizer, state, options=options)

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
