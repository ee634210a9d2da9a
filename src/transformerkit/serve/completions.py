"""``POST /v1/completions`` for language models, as OpenAI's completions API defines it.

A request's sampling settings replace the model's generation defaults (``generation_config.json``)
where given; ``temperature: 0`` is greedy decoding. ``n`` continuations of each prompt are rows
of one batch; choice ``i·n + j`` is prompt i's j-th. With ``stream: true`` the text arrives as
server-sent events, one ``text_completion`` chunk per decoding step and prompt row, then a chunk
with each row's ``finish_reason`` (``stop``: EOS or a stop string; ``length``: ``max_tokens``),
then ``data: [DONE]``. A client that disconnects ends the decoding at the next step.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import suppress
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from transformerkit.inference.language_modeling import (CTranslate2Generator, TextGenerator, load_ctranslate2_generator,
                                                        load_generator)
from transformerkit.serve.common import SamplingRequest, Server, one_to

Prompts = Annotated[str | list[str], one_to(256)]


class CompletionRequest(SamplingRequest):
    prompt: Prompts = ""
    max_tokens: int = Field(16, ge=1, le=65536)
    n: int = Field(1, ge=1, le=64)
    stream: bool = False
    stop: str | list[str] | None = None



AnyTextGenerator = TextGenerator | CTranslate2Generator


def _generator(base: AnyTextGenerator, request: CompletionRequest) -> AnyTextGenerator:
    """``base`` with the request's settings over the model's generation defaults."""
    changes: dict[str, Any] = {"max_new_tokens": request.max_tokens, **request.sampling_changes()}
    if request.stop is not None:
        changes["stop"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    generation = replace(base.generation, **changes)
    try:
        generation.validate()
    except ValueError as error:
        raise ValueError(f"the sampling settings: {error}") from None
    return replace(base, generation=generation)


def add_routes(app: FastAPI, model_dir: Path, server: Server) -> None:
    base: AnyTextGenerator = (load_ctranslate2_generator(model_dir) if server.backend == "ctranslate2"
                              else load_generator(model_dir))

    def header() -> dict[str, Any]:
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": server.name}

    def count(texts: list[str]) -> int:
        """Tokens of generated texts, added to the metrics."""
        tokens = sum(len(ids) for ids in base.tokenizer.encode(texts))
        server.metrics.tokens.inc(tokens)
        return tokens

    def usage(prompts: list[str], texts: list[str]) -> dict[str, int]:
        prompt_tokens = sum(len(ids) for ids in base.tokenizer.encode(prompts))
        completion_tokens = count(texts)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        try:
            generator = _generator(base, request)
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        rows = [p for p in prompts for _ in range(request.n)]  # choice i·n + j: prompt i's j-th
        if request.stream:
            chunks = server.locked(_chunks(generator, rows, header(), count), len(rows))
            try:  # the first step in the handler: a prompt the model cannot continue is still a 400
                first = await run_in_threadpool(next, chunks, None)
            except ValueError as error:
                raise HTTPException(400, str(error)) from None
            return StreamingResponse(_events(chunks, first), media_type="text/event-stream")
        settings = generator.generation
        # greedy requests with the same settings share batches; a sampled one runs alone (its seed
        # draws for its own rows only)
        key = json.dumps(asdict(settings), sort_keys=True) if not settings.do_sample else object()

        def complete(batch: list[str]) -> list[tuple[str, str]]:
            return list(zip(generator.generate(batch), generator.finish_reasons))

        finished = await server.batched(key, rows, complete)
        texts = [text for text, _ in finished]
        choices = [{"text": text, "index": i, "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(finished)]
        return {**header(), "choices": choices, "usage": usage(prompts, texts)}


def _chunks(generator: AnyTextGenerator, rows: list[str], head: dict[str, Any],
            count: Callable[[list[str]], int]) -> Iterator[str]:
    """The server-sent events of one streamed request (``rows``: its prompts, each ``n`` times);
    ``count`` gets the texts generated."""
    def event(choices: list[dict[str, Any]]) -> str:
        return f"data: {json.dumps({**head, 'choices': choices}, ensure_ascii=False)}\n\n"

    texts = [""] * len(rows)
    for pieces in generator.stream(rows):
        texts = [t + p for t, p in zip(texts, pieces)]
        choices = [{"text": piece, "index": i, "logprobs": None, "finish_reason": None}
                   for i, piece in enumerate(pieces) if piece]
        if choices:
            yield event(choices)
    count(texts)
    yield event([{"text": "", "index": i, "logprobs": None, "finish_reason": reason}
                 for i, reason in enumerate(generator.finish_reasons)])
    yield "data: [DONE]\n\n"


async def _events(chunks: Generator[str, None, None], first: str | None) -> AsyncIterator[str]:
    """The rest of :func:`_chunks`, decoded in a worker thread a step at a time. When the client
    goes away the response is cancelled and the decoding closed: at once, or, when a step is still
    running in the worker, as soon as it returns (then nothing holds the generator any more)."""
    try:
        chunk = first
        while chunk is not None:
            yield chunk
            chunk = await run_in_threadpool(next, chunks, None)
    finally:
        with suppress(ValueError):  # "generator already executing": the step in the worker ends it
            chunks.close()
