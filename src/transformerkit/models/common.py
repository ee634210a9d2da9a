"""What every model family shares beyond its layers: kernel switching and parameter counts."""

from __future__ import annotations

from torch import nn

from transformerkit.config import AttentionKernel, TransformerConfig
from transformerkit.nn.attention import MultiHeadAttention


def set_attention_kernel(model: nn.Module, config: TransformerConfig, kernel: AttentionKernel) -> None:
    """Switch every attention module of ``model`` to the ``fused`` or ``reference`` kernel (same weights)."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.kernel = kernel
    config.attention_kernel = kernel


def parameter_counts(model: nn.Module, parts: dict[str, list[nn.Module | nn.Parameter]]) -> dict[str, int]:
    """Trainable parameters per named part, each a list of modules or single parameters (each shared
    tensor counted once, in the first part that has it)."""
    seen: set[int] = set()
    counts: dict[str, int] = {}
    for name, modules in parts.items():
        total = 0
        for module in modules:
            for p in ([module] if isinstance(module, nn.Parameter) else module.parameters()):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        counts[name] = total
    counts["total"] = sum(counts.values())
    assert counts["total"] == sum(p.numel() for p in model.parameters()), "a parameter belongs to no part"
    return counts
