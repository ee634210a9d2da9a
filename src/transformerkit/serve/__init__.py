"""``transformerkit serve``: a model directory behind an HTTP API (FastAPI on uvicorn).

One process serves one model directory. Its task (``task`` in its ``config.json``,
:func:`transformerkit.inference.model_task`) decides the endpoints, through one table,
:data:`ENDPOINTS`: task → the module here that adds its routes::

    language models     POST /v1/completions   OpenAI's completions API (streamed as server-sent events)
    text encoders       POST /v1/embeddings    OpenAI's embeddings API (float or base64)
    classifiers         POST /v1/classify      labels with probabilities
    question answering  POST /v1/answer        question + context → span, score, character offsets
    translation, summarization
                        POST /v1/translate     texts → translations (beam, length penalty)
    vision Transformers POST /v1/classify-image  uploaded image files (multipart) → labels with probabilities
    pixel models        POST /v1/generate-images class, count → PNG images (OpenAI's images shape, or a grid)
    text encoders       POST /v1/attention     a text → its tokens and one layer's self-attention
    every model         GET / (a page to try it), GET /health, GET /v1/models, GET /metrics (Prometheus)

Requests are pydantic models that refuse unknown fields; every error is a JSON body in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for a malformed or invalid
request (naming the field), 404/405 for a wrong path or method, 413 for a body over
``--max-request-bytes``, 429 when ``--max-waiting`` requests already wait for the model, 500 for
a failure inside the model (the next request is served as usual), 504 for a request not answered
within ``--request-timeout`` seconds (its decoding stops at the next step once no request of its
batch waits for it; ``/health`` answers 503 "busy" while work runs past that limit), 503 while the
server shuts down (SIGTERM: requests in flight get the grace period, then decoding stops). A text
longer than the model reads is refused with 413 before it is queued. Concurrent requests with the
same settings are batched (``--max-batch-rows``, ``--max-wait-ms``; sampled completions run
alone), one batch at a time through the model (a lock); each request's result is what the
command-line verb gives for the same input and seed.
"""

from __future__ import annotations

import argparse
from importlib import import_module
from pathlib import Path
from typing import Any

from transformerkit.commands import Commands, UsageError

ENDPOINTS = {
    "language-modeling": "completions",
    "sentence-embedding": "embeddings",
    "classification": "classify",
    "question-answering": "answer",
    "translation": "translate",
    "summarization": "translate",
    "image-classification": "classify_image",
    "image-generation": "generate_images",
}
"""Task (as model directories name it) → the module of :mod:`transformerkit.serve` whose
``add_routes(app, model_dir, server)`` adds that task's endpoints: an endpoint is one module and
one line here."""
CTRANSLATE2_TASKS = ("translation", "summarization", "language-modeling")
"""The tasks whose endpoints run on a CTranslate2 export too (``serve --backend ctranslate2``)."""


def create_app(model_dir: str | Path, max_request_bytes: int = 1 << 20, max_waiting: int = 64,
               max_batch_rows: int = 32, max_wait_ms: float = 5.0, request_timeout: float = 60.0,
               backend: str = "transformerkit") -> Any:
    """The FastAPI application serving ``model_dir`` (the model is loaded now): a model directory,
    or with ``backend="ctranslate2"`` a CTranslate2 export of a translation, summarization or
    language model."""
    from transformerkit.inference import model_task
    from transformerkit.inference.engines import ctranslate2_task
    from transformerkit.serve.common import new_app
    from transformerkit.serve.page import add_page

    directory = Path(model_dir)
    if backend == "ctranslate2":
        task = ctranslate2_task(directory) or "translation"  # exports that predate the record: translators
        if task not in CTRANSLATE2_TASKS:
            raise ValueError(f"{model_dir}: serve --backend ctranslate2 serves {', '.join(CTRANSLATE2_TASKS)} "
                             f"models, not {task} models")
    else:
        task = model_task(directory)
    if task not in ENDPOINTS:
        raise ValueError(f"{model_dir}: no HTTP endpoints serve this kind of model (task {task})")
    app, server = new_app(directory, max_request_bytes, max_waiting, max_batch_rows, max_wait_ms, request_timeout)
    routes = import_module(f"{__name__}.{ENDPOINTS[task]}")
    server.task, server.backend = ENDPOINTS[task], backend
    routes.add_routes(app, directory, server)
    add_page(app, task, server)
    return app


def add_commands(commands: Commands) -> None:
    """``serve``: the HTTP API of a model directory."""
    command = commands.add_parser("serve", help="serve a model directory over HTTP (OpenAI-compatible where "
                                                "an OpenAI API exists)")
    command.add_argument("--model", required=True, help="model directory")
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    command.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    command.add_argument("--max-request-bytes", type=int, default=1 << 20,
                         help="larger request bodies are refused with 413 (default: 1 MiB)")
    command.add_argument("--max-waiting", type=int, default=64,
                         help="requests that may wait for the model; one more is refused with 429 (default: 64)")
    command.add_argument("--max-batch-rows", type=int, default=32,
                         help="inputs of concurrent requests run through the model together, at most (default: 32)")
    command.add_argument("--max-wait-ms", type=float, default=5.0,
                         help="how long a request waits for others to share its batch (default: 5)")
    command.add_argument("--request-timeout", type=float, default=60.0,
                         help="a request not answered within this many seconds gets 504 and its decoding is "
                              "stopped; 0: no limit (default: 60)")
    command.add_argument("--backend", choices=["transformerkit", "ctranslate2"], default="transformerkit",
                         help="ctranslate2: --model is an export of transformerkit export --format ctranslate2 "
                              "(translation, summarization and language models)")
    command.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("transformerkit serve needs FastAPI and uvicorn: "
                         "pip install 'transformerkit[serve]'") from None
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {args.port}")
    if args.max_request_bytes < 1 or args.max_waiting < 0 or args.max_batch_rows < 1 or not 0 <= args.max_wait_ms < 1e4:
        raise UsageError("--max-request-bytes and --max-batch-rows must be positive, --max-waiting 0 or more, "
                         "--max-wait-ms in [0, 10000)")
    if not 0 <= args.request_timeout < 1e6:  # NaN fails too
        raise UsageError(f"--request-timeout must be in [0, 1000000) seconds, got {args.request_timeout}")
    app = create_app(args.model, args.max_request_bytes, args.max_waiting, args.max_batch_rows, args.max_wait_ms,
                     args.request_timeout, args.backend)
    # SIGTERM / Ctrl-C: stop accepting, let requests in flight finish (streams get 30 s), then exit
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=30)
    return 0
