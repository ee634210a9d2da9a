"""``POST /v1/answer`` for extractive question answering: the best span of the context, its score,
probability and character offsets (``context[start:end]`` is the answer), as ``transformerkit
answer`` finds it (:class:`~transformerkit.inference.question_answering.QuestionAnswerer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field

from transformerkit.inference.question_answering import load_answerer
from transformerkit.serve.attention import add_attention_route
from transformerkit.serve.common import Server, Strict


class AnswerRequest(Strict):
    question: str = Field(min_length=1)
    context: str = Field(min_length=1)
    model: str | None = None


def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    answerer = load_answerer(model_dir)
    add_attention_route(app, answerer.model, answerer.tokenizer, server)

    @app.post("/v1/answer")
    async def answer(request: AnswerRequest) -> dict[str, Any]:
        (prediction,) = await server.batched("answer", [(request.question, request.context)], answerer.answer_all)
        return {"model": server.name, "answer": prediction.text, "score": prediction.score,
                "probability": prediction.probability, "start": prediction.start, "end": prediction.end}
