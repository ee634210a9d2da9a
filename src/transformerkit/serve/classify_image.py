"""``POST /v1/classify-image`` for vision Transformers: image files uploaded as
``multipart/form-data`` (one or more ``file`` parts: PNG, JPEG or anything Pillow reads) → each
image's most probable label and every label's probability, as ``transformerkit classify-image``
gives them (:class:`~transformerkit.inference.image_classification.ImageClassifier`). A part that
is not an image, or one over :data:`~transformerkit.data.images.MAX_IMAGE_PIXELS`, is a 400
naming it; concurrent requests are classified in one batch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, UploadFile
from starlette.exceptions import HTTPException

from transformerkit.data.images import read_image
from transformerkit.data.parallel import DataError
from transformerkit.inference.image_classification import load_image_classifier
from transformerkit.serve.common import Server

MAX_FILES = 256
"""Images one request may upload."""


def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    classifier = load_image_classifier(model_dir)
    config = classifier.model.config
    labels = config.labels

    @app.post("/v1/classify-image")
    async def classify_image(file: Annotated[list[UploadFile], File(description="image files")]) -> dict[str, Any]:
        if len(file) > MAX_FILES:
            raise HTTPException(400, f"file: at most {MAX_FILES} images per request, got {len(file)}")
        images = []
        for index, upload in enumerate(file):
            name = f"file[{index}] ({upload.filename or 'unnamed'})"
            try:
                images.append(read_image(await upload.read(), config.num_channels, config.image_size, name))
            except DataError as error:
                raise HTTPException(400, str(error)) from None
        rows = await server.batched("classify-image", images,
                                    lambda batch: classifier.probabilities(torch.stack(batch)).tolist())
        results = []
        for upload, row in zip(file, rows):
            best = max(range(len(labels)), key=row.__getitem__)
            results.append({"file": upload.filename, "label": labels[best], "probability": row[best],
                            "probabilities": dict(zip(labels, row))})
        return {"model": server.name, "results": results}
