"""Sentence embeddings with an encoder-only model: mean-pooled, L2-normalized token states (the
pooling sentence-transformers uses for all-MiniLM-L6-v2 and most of its models)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.commands import Commands, read_lines, refuse_overwriting_input, write_lines
from transformerkit.data.batching import pad_right
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.devices import model_device, pick_device
from transformerkit.models.encoder_only import EncoderOnlyTransformer


@dataclass
class SentenceEncoder:
    model: EncoderOnlyTransformer
    tokenizer: SubwordTokenizer
    max_length: int = 256
    """Tokens per text, [CLS] and [SEP] included; longer texts are cut (as sentence-transformers does)."""
    batch_size: int = 32

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> Tensor:
        """(len(texts), d_model) unit vectors, in the order of ``texts``."""
        device = model_device(self.model)
        ids = self.tokenizer.encode_for_encoder(texts, self.max_length)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # little padding per batch
        out = torch.empty(len(ids), self.model.config.d_model)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch, mask = pad_right([ids[i] for i in chunk], self.tokenizer.pad_id)
            batch, mask = batch.to(device), mask.to(device)
            hidden, _ = self.model(batch, attention_mask=mask)
            out[chunk] = EncoderOnlyTransformer.mean_pooled(hidden, mask).float().cpu()
        return out


@torch.inference_mode()
def self_attention(model: EncoderOnlyTransformer, tokenizer: SubwordTokenizer, text: str, layer: int = -1,
                   head: int | None = None, max_length: int = 512) -> tuple[Tensor, list[str]]:
    """Self-attention of one encoder layer (``layer``: negative from the last) over ``[CLS] text
    [SEP]`` (cut to ``max_length`` tokens), of one ``head`` or averaged over heads (None):
    weights (seq, seq) — row i is what token i reads, summing to 1 — and the tokens."""
    ids = tokenizer.encode_for_encoder([text], max_length)[0]
    _, attention = model(torch.tensor([ids], device=model_device(model)), need_weights=True)
    weights = attention[layer].self_attention
    assert weights is not None, "an encoder's layers attend to themselves"
    heads = weights[0].float()
    return (heads.mean(0) if head is None else heads[head]).cpu(), tokenizer.tokens(ids)


def load_sentence_encoder(model_dir: str | Path, max_length: int = 256, device: str | None = None) -> SentenceEncoder:
    device = pick_device(device)
    model, tokenizer, _ = load_model_dir(model_dir, device)
    if not isinstance(model, EncoderOnlyTransformer):
        raise CheckpointError(f"{model_dir} holds a {model.model_type} model, not an encoder-only model")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    return SentenceEncoder(model, tokenizer, min(max_length, model.config.max_positions))


def add_commands(commands: Commands) -> None:
    """``embed``: one vector per input line, as JSONL or a ``.npy`` array."""
    command = commands.add_parser("embed", help="sentence embeddings (mean-pooled, L2-normalized) of lines")
    command.add_argument("--model", required=True, help="encoder-only model directory")
    command.add_argument("--input", default=None, help="read this file instead of stdin")
    command.add_argument("--output", "--out", dest="output", default=None,
                         help="FILE.npy (array) or FILE.jsonl (default: JSONL on stdout)")
    command.add_argument("--max-length", type=int, default=256, help="tokens per line, [CLS]/[SEP] included")
    command.set_defaults(handler=embed_command)


def embed_command(args: Any) -> int:
    refuse_overwriting_input(args.input, args.output)
    lines = read_lines(args.input)
    embeddings = load_sentence_encoder(args.model, max_length=args.max_length).encode(lines)
    if args.output and args.output.endswith(".npy"):
        import numpy as np

        np.save(args.output, embeddings.numpy())
        return 0
    write_lines([json.dumps({"text": text, "embedding": vector}, ensure_ascii=False)
                 for text, vector in zip(lines, embeddings.tolist())], args.output)
    return 0
