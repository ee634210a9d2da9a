"""The contract every model family keeps (:class:`TransformerModel`): a configuration, a
``model_type`` for its ``config.json``, one attention-kernel switch and parameter counts by part.

What ``forward`` takes and returns follows the family's Hugging Face counterpart, so that parity
tests compare like with like: token ids in, and out next-token logits (the decoders, as
``GPT2LMHeadModel`` / ``MarianMTModel``) or ``(hidden states, attention)`` (the encoders, as
``BertModel`` / ``ViTModel``, whose heads are separate methods). The decoders have
``loss(…, reduction)``; the encoders' losses belong to their tasks (span, label, pixel heads).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from transformerkit.config import AttentionKernel, TransformerConfig
from transformerkit.nn.attention import use_attention_kernel
from transformerkit.nn.layers import LayerAttention


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
        use_attention_kernel(self, kernel)
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


class EncoderDecoderModel(TransformerModel):
    """An encoder-decoder of any kind (the Transformer's, the recurrent baseline): teacher-forced
    logits and the training loss from its parts, which each subclass defines — ``source_mask``,
    ``encode``, ``decode`` and ``output`` (the contract decoding uses,
    :class:`transformerkit.generation.decoders.Seq2SeqModel`)."""

    config: Any

    def source_mask(self, src: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, src: Tensor, src_mask: Tensor | None = None, need_weights: bool = False
               ) -> tuple[Tensor, list[LayerAttention]]:
        raise NotImplementedError

    def decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None, cache: Any = None,
               need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]:
        raise NotImplementedError

    def output(self, hidden: Tensor, memory: Tensor, memory_mask: Tensor, src: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def cross_attention_shape(self) -> tuple[int, int]:
        """(layers, heads) of the cross-attention ``decode(..., need_weights=True)`` returns."""
        raise NotImplementedError

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced logits. src: (batch, src_len), tgt: (batch, tgt_len) → (batch, tgt_len, vocab)."""
        src_mask = self.source_mask(src)
        memory, _ = self.encode(src, src_mask)
        hidden, _ = self.decode(tgt, memory, src_mask)
        return self.output(hidden, memory, src_mask, src)

    def loss(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, reduction: str = "mean") -> Tensor:
        """Label-smoothed cross-entropy (ε_ls = ``config.label_smoothing``) over non-pad targets,
        averaged (``mean``) or summed (``sum``) over target tokens."""
        logits = self(src, tgt_in)
        return F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=self.config.pad_id,
                               label_smoothing=self.config.label_smoothing, reduction=reduction)
