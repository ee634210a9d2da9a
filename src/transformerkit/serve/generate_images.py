"""``POST /v1/generate-images`` for class-conditional pixel models: a class (name or index) and a
count → that many sampled images as PNG files, in the shape of OpenAI's images API
(``{"created", "data": [{"b64_json"}]}``), or with ``"response_format": "png"`` one PNG grid of
them (``image/png``). The sampling settings replace the model's generation defaults where given
(``temperature: 0`` is greedy); with a ``seed`` the images are those of ``transformerkit
generate-images --class C --count N --seed S``
(:class:`~transformerkit.inference.image_generation.ImageGenerator`). Each request samples alone,
with the model to itself: its seed draws its own images only."""

from __future__ import annotations

import base64
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from transformerkit.data.images import image_grid, pixel_array, png_bytes
from transformerkit.inference.image_generation import ImageGenerator, load_image_generator
from transformerkit.serve.common import SamplingRequest, Server


class ImagesRequest(SamplingRequest):
    class_: str | int = Field(alias="class")
    """The class to draw: its name (``"Sneaker"``) or index."""
    n: int = Field(1, ge=1, le=64)
    top_k: int | None = Field(None, ge=0)
    response_format: Literal["b64_json", "png"] = "b64_json"
    columns: int = Field(8, ge=1, le=64)
    """Images per row of the ``png`` grid."""
    scale: int = Field(4, ge=1, le=16)
    """Each pixel of the ``png`` grid drawn this many times larger."""


def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    base = load_image_generator(model_dir, do_sample=True)  # as generate-images samples unless --greedy

    @app.post("/v1/generate-images", response_model=None)
    async def generate_images(request: ImagesRequest) -> dict[str, Any] | Response:
        try:
            label = base.class_index(str(request.class_))
            generation = replace(base.generation, **request.sampling_changes(),
                                 **({} if request.top_k is None else {"top_k": request.top_k}))
            generation.validate()
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        generator = ImageGenerator(base.model, base.tokenizer, generation)
        images = await run_in_threadpool(server.run, lambda: generator.generate([label] * request.n), request.n)
        if request.response_format == "png":
            grid = image_grid(images, columns=min(request.columns, request.n), scale=request.scale)
            return Response(png_bytes(grid), media_type="image/png")
        files = [png_bytes(pixel_array(image)) for image in images]
        return {"created": int(time.time()), "model": server.name, "class": base.tokenizer.labels[label],
                "data": [{"b64_json": base64.b64encode(f).decode("ascii")} for f in files]}
