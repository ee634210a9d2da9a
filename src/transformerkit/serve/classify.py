"""``POST /v1/classify`` for text classifiers: each text's most probable label and the probability
of every label (:class:`~transformerkit.inference.classification.TextClassifier`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field

from transformerkit.inference.classification import load_classifier
from transformerkit.serve.attention import add_attention_route
from transformerkit.serve.common import Server, Strict


class ClassifyRequest(Strict):
    texts: list[str] = Field(min_length=1, max_length=1024)
    model: str | None = None


def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    classifier = load_classifier(model_dir)
    add_attention_route(app, classifier.model, classifier.tokenizer, server)
    labels = classifier.model.config.labels

    @app.post("/v1/classify")
    async def classify(request: ClassifyRequest) -> dict[str, Any]:
        rows = await server.batched("classify", request.texts, lambda texts: classifier.probabilities(texts).tolist())
        results = []
        for row in rows:
            best = max(range(len(labels)), key=row.__getitem__)
            results.append({"label": labels[best], "probability": row[best],
                            "probabilities": dict(zip(labels, row))})
        return {"model": server.name, "results": results}
