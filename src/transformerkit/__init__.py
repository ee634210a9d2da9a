"""transformerkit: the Transformer of "Attention Is All You Need", from its parts up."""

from transformerkit.config import (PRESETS, DecoderOnlyConfig, EncoderDecoderConfig, EncoderOnlyConfig,
                                   TransformerConfig, VisionConfig, preset)
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

__all__ = ["DecoderOnlyConfig", "EncoderDecoderConfig", "EncoderDecoderTransformer", "EncoderOnlyConfig", "PRESETS",
           "TransformerConfig", "VisionConfig", "preset"]
__version__ = "0.1.0"
