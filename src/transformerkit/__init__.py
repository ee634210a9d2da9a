"""transformerkit: the Transformer of "Attention Is All You Need", from its parts up."""

from transformerkit.config import PRESETS, TransformerConfig, preset
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

__all__ = ["EncoderDecoderTransformer", "PRESETS", "TransformerConfig", "preset"]
__version__ = "0.1.0"
