"""The contract every model family keeps (:class:`TransformerModel`): a configuration, a
``model_type`` for its ``config.json``, one attention-kernel switch and parameter counts by part.

What ``forward`` takes and returns follows the family's Hugging Face counterpart, so that parity
tests compare like with like: token ids in, and out next-token logits (the decoders, as
``GPT2LMHeadModel`` / ``MarianMTModel``) or ``(hidden states, attention)`` (the encoders, as
``BertModel`` / ``ViTModel``, whose heads are separate methods). The decoders have
``loss(…, reduction)``; the encoders' losses belong to their tasks (span, label, pixel heads).
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from transformerkit.config import AttentionKernel, TransformerConfig
from transformerkit.nn.attention import MultiHeadAttention


class TransformerModel(nn.Module):
    """Base of the four families (encoder-decoder, decoder-only, encoder-only, vision)."""

    model_type: ClassVar[str]
    """``model_type`` in the ``config.json`` of a saved model."""
    config_class: ClassVar[type[TransformerConfig]]
    """The family's configuration class: what the constructor takes and ``config.json`` is read
    into (:func:`transformerkit.checkpoint.read_model_config`)."""
    requires: ClassVar[str]
    """What the family's configuration describes, for the error a configuration of another family gets."""
    config: TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ValueError(f"{self.requires}: it reads {self.config_class.__name__}, not "
                             f"{type(config).__name__}")
        self.config = config

    def set_attention_kernel(self, kernel: AttentionKernel) -> None:
        """Switch every attention module to the ``fused`` or ``reference`` kernel (same weights)."""
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.kernel = kernel
        self.config.attention_kernel = kernel

    def parameter_parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        """The model's named parts (modules or single parameters), for :meth:`parameter_counts`."""
        raise NotImplementedError

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part (each shared tensor counted once, in the first part that
        has it) and their ``total``."""
        seen: set[int] = set()
        counts: dict[str, int] = {}
        for name, modules in self.parameter_parts().items():
            total = 0
            for module in modules:
                for p in ([module] if isinstance(module, nn.Parameter) else module.parameters()):
                    if id(p) not in seen:
                        seen.add(id(p))
                        total += p.numel()
            counts[name] = total
        counts["total"] = sum(counts.values())
        assert counts["total"] == sum(p.numel() for p in self.parameters()), "a parameter belongs to no part"
        return counts
