"""The model families by name: ``model_type`` (as written in ``config.json``) → class, and the
family a configuration describes. The one place that tells the families apart."""

from __future__ import annotations

from typing import Union

from transformerkit.config import TransformerConfig
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.vision import VisionTransformer

Model = Union[EncoderDecoderTransformer, DecoderOnlyTransformer, EncoderOnlyTransformer, VisionTransformer]
"""Any family (each a :class:`~transformerkit.models.common.TransformerModel`)."""
MODEL_CLASSES: dict[str, type[Model]] = {
    cls.model_type: cls
    for cls in (EncoderDecoderTransformer, DecoderOnlyTransformer, EncoderOnlyTransformer, VisionTransformer)}


def model_class_for(config: TransformerConfig) -> type[Model]:
    """The family of a configuration: images → ViT; no encoder → decoder-only; no decoder →
    encoder-only; both → encoder-decoder."""
    if config.image_size:
        return VisionTransformer
    if config.num_encoder_layers == 0:
        return DecoderOnlyTransformer
    return EncoderOnlyTransformer if config.num_decoder_layers == 0 else EncoderDecoderTransformer
