"""``POST /v1/attention`` for text encoders (classifiers, question answering, sentence
embeddings): one text → its tokens and the self-attention of one encoder layer, one head or the
mean over heads (:func:`~transformerkit.inference.embedding.self_attention`), what the page at
``GET /`` draws as a heatmap. Each endpoint module of an encoder adds it with the model it loaded."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from torch import Tensor

from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.inference.embedding import self_attention
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.serve.common import Server, Strict

MAX_TOKENS = 512
"""Tokens of the text drawn, [CLS] and [SEP] included (longer texts are cut)."""


class AttentionRequest(Strict):
    text: str = Field(max_length=100_000)
    layer: int = Field(-1, ge=-64, le=63)
    """An encoder layer: 0 is the first, -1 the last."""
    head: int | None = Field(None, ge=0, le=255)
    """One head, or null for the mean over heads."""
    model: str | None = None


def check_layer_and_head(layer: int, head: int | None, layers: int, heads: int, stack: str) -> None:
    """A 400 naming ``layer`` or ``head`` when the model's ``stack`` has no such layer or head."""
    if not -layers <= layer < layers:
        raise HTTPException(400, f"layer: the model has {layers} {stack} layers (0..{layers - 1}, or -1 for the "
                                 f"last), got {layer}")
    if head is not None and head >= heads:
        raise HTTPException(400, f"head: the model has {heads} heads (0..{heads - 1}), got {head}")


def add_attention_route(app: FastAPI, model: EncoderOnlyTransformer, tokenizer: SubwordTokenizer,
                        server: Server) -> None:
    layers, heads = model.config.num_encoder_layers, model.config.num_heads
    server.attention_shape = (layers, heads)

    @app.post("/v1/attention")
    async def attention(request: AttentionRequest) -> dict[str, Any]:
        check_layer_and_head(request.layer, request.head, layers, heads, "encoder")
        max_length = min(MAX_TOKENS, model.config.max_positions)
        weights, tokens = await run_in_threadpool(
            server.run, lambda: self_attention(model, tokenizer, request.text, request.layer, request.head,
                                               max_length))
        return {"model": server.name, "tokens": tokens, "weights": rounded(weights)}


def rounded(weights: Tensor) -> list[list[float]]:
    """An attention matrix as JSON rows, 5 decimals (what a heatmap needs, a fifth of the bytes)."""
    return [[round(w, 5) for w in row] for row in weights.tolist()]
