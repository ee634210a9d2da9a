"""``POST /v1/embeddings`` for text encoders, as OpenAI's embeddings API defines it: one
mean-pooled, L2-normalized vector per input text (:class:`~transformerkit.inference.embedding.SentenceEncoder`,
as ``transformerkit embed`` computes them), as numbers or as base64 of little-endian float32
(``encoding_format``, which the official ``openai`` client asks for by default)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI

from transformerkit.inference.embedding import load_sentence_encoder
from transformerkit.serve.attention import add_attention_route
from transformerkit.serve.common import Server, Strict, one_to

Inputs = Annotated[str | list[str], one_to(2048)]


class EmbeddingRequest(Strict):
    input: Inputs
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None



def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    encoder = load_sentence_encoder(model_dir)
    add_attention_route(app, encoder.model, encoder.tokenizer, server)

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest) -> dict[str, Any]:
        texts = [request.input] if isinstance(request.input, str) else request.input
        vectors = torch.stack(await server.batched("embeddings", texts, lambda batch: list(encoder.encode(batch))))
        if request.encoding_format == "base64":
            values: list[Any] = [base64.b64encode(v.numpy().astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            values = vectors.tolist()
        tokens = sum(len(ids) for ids in encoder.tokenizer.encode_for_encoder(texts, encoder.max_length))
        return {"object": "list", "model": server.name,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
