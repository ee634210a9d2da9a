"""``POST /v1/translate`` for encoder-decoder models (translation and summarization): texts in,
their translations out, in order, as ``transformerkit translate`` gives them
(:class:`~transformerkit.inference.translation.Translator`); ``beam``, ``length_penalty`` and
``max_length`` replace the model's decoding defaults for the request, and ``attention: true`` adds
each translation's cross-attention (one decoder layer, one head or their mean), as
``transformerkit plot-attention`` draws it. A text longer than the model's source limit
(:attr:`~transformerkit.inference.translation.Translator.source_bound`) is refused with 413 naming
it: the work of one request is bounded before it is queued. Served from a CTranslate2 export
(``serve --backend ctranslate2``), translations come from
:class:`~transformerkit.inference.translation.CTranslate2Translator` and ``attention`` is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from transformerkit.inference.translation import (CTranslate2Translator, Translator, cross_attention,
                                                  load_ctranslate2_translator, load_translator)
from transformerkit.serve.attention import check_layer_and_head, rounded
from transformerkit.serve.common import Server, Strict


class TranslateRequest(Strict):
    texts: list[str] = Field(min_length=1, max_length=1024)
    beam: int | None = Field(None, ge=1, le=64)
    length_penalty: float | None = Field(None, ge=0, le=10)
    max_length: int | None = Field(None, ge=1, le=4096)
    """Tokens each output may have at most (default: the model's, its source length + an offset)."""
    attention: bool = False
    """Also return each translation's cross-attention: ``layer`` (negative: from the last), ``head``
    (null: the mean over heads), rows = output tokens (EOS included), columns = source tokens."""
    layer: int = Field(-1, ge=-64, le=63)
    head: int | None = Field(None, ge=0, le=255)
    model: str | None = None


def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    base: Translator | CTranslate2Translator
    if server.backend == "ctranslate2":
        base = load_ctranslate2_translator(model_dir)
    else:
        base = load_translator(model_dir)
        server.attention_shape = base.model.cross_attention_shape

    @app.post("/v1/translate")
    async def translate(request: TranslateRequest) -> dict[str, Any]:
        default = base.generation
        generation = replace(default, beam=default.beam if request.beam is None else request.beam,
                             length_penalty=default.length_penalty if request.length_penalty is None
                             else request.length_penalty,
                             max_length=default.max_length if request.max_length is None else request.max_length)
        if request.attention:
            if not isinstance(base, Translator):
                raise HTTPException(400, "attention: the model is served by CTranslate2, which does not return "
                                         "it (serve with --backend transformerkit)")
            check_layer_and_head(request.layer, request.head, *server.attention_shape, "decoder")
        translator = replace(base, generation=generation)
        overlong = translator.cut_by_bound(base.tokenizer.encode(request.texts))
        if overlong:
            raise HTTPException(413, f"texts.{overlong[0]}: longer than the model's limit of {translator.source_bound} "
                                     f"tokens (split it, or translate it with the command line, which cuts it)")
        translations = await server.batched(("translate", generation.beam, generation.length_penalty,
                                             generation.max_length), request.texts, translator.translate)
        answer: dict[str, Any] = {"model": server.name, "translations": translations}
        if isinstance(translator, Translator) and request.attention:
            answer["attention"] = await run_in_threadpool(
                server.run, lambda: [attention_of(translator, text, translation, request.layer, request.head)
                                     for text, translation in zip(request.texts, translations)], len(translations))
        return answer


def attention_of(translator: Translator, text: str, translation: str, layer: int, head: int | None
                 ) -> dict[str, Any]:
    weights, source_tokens, target_tokens = cross_attention(translator, text, translation, layer, head)
    return {"source_tokens": source_tokens, "target_tokens": target_tokens,
            "weights": rounded(weights)}
