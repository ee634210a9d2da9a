"""The Vision Transformer (ViT, Dosovitskiy et al., 2021): the paper's encoder over image patches.

    x₀     = [class; PatchEmbed(image)] + P                           (batch, 1 + N, d_model), N = (H/P)·(W/P)
    h      = Encoder(Dropout(x₀))                                     pre-norm, final LayerNorm
    logits = W_c h[:, 0] + b_c                                        (batch, labels)

PatchEmbed cuts the (channels, H, W) image into P×P patches and maps each linearly to d_model
(:class:`~transformerkit.nn.embedding.PatchEmbedding`); ``class`` is one learned vector whose
final state summarizes the image; P is a learned position table (1 + N rows). The stack is the
same :func:`~transformerkit.models.builders.transformer_stack` as every other family, with
``norm_position = "pre"``, no masks and no cache. With the ``vit-*`` presets the weights of
Hugging Face ``ViTForImageClassification`` checkpoints load unchanged (:mod:`transformerkit.interop.vit`).

Inputs are normalized pixels, ``(images / 255 - mean) / std``
(:class:`~transformerkit.data.image_processing.ImageProcessor`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transformerkit.config import VisionConfig
from transformerkit.models import builders
from transformerkit.models.common import TransformerModel
from transformerkit.nn.dropout import Dropout
from transformerkit.nn.embedding import LearnedPositionalEmbedding, PatchEmbedding
from transformerkit.nn.layers import LayerAttention


class VisionTransformer(TransformerModel):
    model_type = "transformerkit-vit"
    """``model_type`` in the ``config.json`` of a saved model."""

    config_class = VisionConfig
    requires = "a vision Transformer reads images (image_size, patch_size, num_channels)"
    config: VisionConfig

    def __init__(self, config: VisionConfig) -> None:
        super().__init__(config)
        if config.positional != "learned" or config.norm_position != "pre":
            raise ValueError("a vision Transformer has learned positions and pre-norm layers "
                             f"(got positional={config.positional!r}, norm_position={config.norm_position!r})")
        self.patches = PatchEmbedding(config.num_channels, config.patch_size, config.d_model)
        self.class_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        nn.init.trunc_normal_(self.class_token, std=0.02)
        self.positions = LearnedPositionalEmbedding(self.num_patches + 1, config.d_model)
        self.dropout = Dropout(config.dropout)
        self.encoder = builders.transformer_stack(config, config.num_encoder_layers, cross_attention=False)
        self.classifier = nn.Linear(config.d_model, len(config.labels)) if config.labels else None

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    def forward(self, images: Tensor, need_weights: bool = False) -> tuple[Tensor, list[LayerAttention]]:
        """images (batch, channels, H, W), normalized → hidden states (batch, 1 + N, d_model); index 0 is the class token."""
        c, size = self.config.num_channels, self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (c, size, size):
            raise ValueError(f"expected images of shape (batch, {c}, {size}, {size}), got {tuple(images.shape)}")
        x = self.patches(images)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        positions = torch.arange(x.shape[1], device=x.device)
        x = self.dropout(x + self.positions(positions).to(x.dtype))
        return self.encoder(x, need_weights=need_weights)

    def classify(self, images: Tensor) -> Tensor:
        """Class logits (batch, len(config.labels)) from the final state of the class token."""
        if self.classifier is None:
            raise ValueError("the model has no classification head (config.labels is empty)")
        hidden, _ = self(images)
        return self.classifier(hidden[:, 0])

    def parameter_parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        heads = [self.classifier] if self.classifier is not None else []
        return {"embeddings": [self.patches, self.class_token, self.positions],
                "encoder": [self.encoder], "heads": heads}
