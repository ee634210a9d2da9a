"""The model families by name: ``model_type`` (as written in ``config.json``) → class, the short
family names of recipes, and the family a configuration belongs to (its class). The one place that
lists the families."""

from __future__ import annotations

from typing import Union

from transformerkit.config import TransformerConfig
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.rnn import RNNEncoderDecoder
from transformerkit.models.rnn_language_model import RNNLanguageModel
from transformerkit.models.vision import VisionTransformer

Model = Union[EncoderDecoderTransformer, DecoderOnlyTransformer, EncoderOnlyTransformer, VisionTransformer,
              RNNEncoderDecoder, RNNLanguageModel]
"""Any family (each a :class:`~transformerkit.models.common.TransformerModel`)."""
MODEL_CLASSES: dict[str, type[Model]] = {
    cls.model_type: cls
    for cls in (EncoderDecoderTransformer, DecoderOnlyTransformer, EncoderOnlyTransformer, VisionTransformer,
                RNNEncoderDecoder, RNNLanguageModel)}
"""``model_type`` → model class: a new family is one line here (and its module)."""
FAMILIES: dict[str, type[Model]] = {cls.config_class.family: cls for cls in MODEL_CLASSES.values()}
"""The family's short name (``model.family`` in a recipe) → model class."""


def model_class_for(config: TransformerConfig) -> type[Model]:
    """The model class that reads ``config`` (the family whose configuration class it is)."""
    for cls in MODEL_CLASSES.values():
        if type(config) is cls.config_class:
            return cls
    raise ValueError(f"no model family reads {type(config).__name__}")
