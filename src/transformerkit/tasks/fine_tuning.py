"""What the encoder tasks (classification, question answering) share: a data section naming the
tokenizer and pretrained weights, a model with a task head, fresh or initialized from a
pretrained encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.config import EncoderOnlyConfig
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.training.recipe import RunConfig

_HEADS = ("classifier.", "span_head.", "masked_lm_head.")


@dataclass
class EncoderTaskData:
    """What the encoder tasks' data sections share: where the tokenizer and pretrained weights are."""

    tokenizer: str = ""
    """A directory holding the tokenizer (``tokenizer.json`` or ``vocab.txt``); default: ``init_from``."""
    init_from: str | None = None
    """A transformerkit encoder-only model directory to fine-tune (its config replaces ``model``,
    except the task's head and ``dropout``); None trains from scratch."""

    def validate(self, run: RunConfig[Any]) -> None:
        if not (self.tokenizer or self.init_from):
            raise ValueError("set data.tokenizer (a directory with tokenizer.json or vocab.txt) or data.init_from")


def encoder_for_task(config: EncoderOnlyConfig, init_from: str | None, tokenizer_dir: str, resume: bool,
                     device: torch.device, **head: Any) -> tuple[EncoderOnlyTransformer, SubwordTokenizer]:
    """An encoder-only model with the task's ``head`` fields (e.g. ``labels=[…]``, ``span_head=True``)
    and its tokenizer (from ``tokenizer_dir``, else ``init_from``).

    With ``init_from`` (a transformerkit encoder-only model directory) the pretrained config
    replaces ``config`` except ``dropout``, and its weights are loaded: every tensor but the new
    head's must fit. A resumed run skips the loading (its checkpoint has every weight).
    """
    tokenizer = SubwordTokenizer.from_directory(tokenizer_dir or init_from or "")
    pretrained = None
    if init_from is not None:
        pretrained, _, _ = load_model_dir(init_from)
        if not isinstance(pretrained, EncoderOnlyTransformer):
            raise CheckpointError(f"{init_from} holds a {pretrained.model_type} model, not an encoder-only model")
        config = pretrained.config.replace(dropout=config.dropout)
    heads = {"labels": [], "span_head": False, "masked_lm_head": False} | head
    model = EncoderOnlyTransformer(config.replace(**heads)).to(device)
    if pretrained is not None and not resume:
        state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith(_HEADS)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(_HEADS) for k in missing):
            raise CheckpointError(f"{init_from} does not fit: missing {missing}, unexpected {unexpected}")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model "
                         f"{model.config.vocab_size} (set model.vocab_size)")
    return model, tokenizer
