"""``POST /v1/translate`` for encoder-decoder models (translation and summarization): texts in,
their translations out, in order, as ``transformerkit translate`` gives them
(:class:`~transformerkit.inference.translation.Translator`); ``beam`` and ``length_penalty`` replace
the model's decoding defaults for the request. A text longer than the model's source limit
(:attr:`~transformerkit.inference.translation.Translator.source_bound`) is refused with 413 naming
it: the work of one request is bounded before it is queued."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from starlette.exceptions import HTTPException

from transformerkit.inference.translation import Translator, load_translator
from transformerkit.serve.common import Server, Strict


class TranslateRequest(Strict):
    texts: list[str] = Field(min_length=1, max_length=1024)
    beam: int | None = Field(None, ge=1, le=64)
    length_penalty: float | None = Field(None, ge=0, le=10)
    model: str | None = None


def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    base = load_translator(model_dir)

    @app.post("/v1/translate")
    async def translate(request: TranslateRequest) -> dict[str, Any]:
        default = base.generation
        generation = replace(default, beam=default.beam if request.beam is None else request.beam,
                             length_penalty=default.length_penalty if request.length_penalty is None
                             else request.length_penalty)
        translator = Translator(base.model, base.tokenizer, generation, base.batch_tokens)
        overlong = translator.cut_by_bound(base.tokenizer.encode(request.texts))
        if overlong:
            raise HTTPException(413, f"texts.{overlong[0]}: longer than the model's limit of {translator.source_bound} "
                                     f"tokens (split it, or translate it with the command line, which cuts it)")
        translations = await server.batched(("translate", generation.beam, generation.length_penalty), request.texts,
                                            translator.translate)
        return {"model": server.name, "translations": translations}
