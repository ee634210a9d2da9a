"""What every endpoint shares: the server's state (the model's lock and its queue limit), strict
request models, OpenAI-shaped errors, the request-size limit, the metrics, and ``/health``,
``/v1/models`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transformerkit.data.tokenizer import check_unicode
from transformerkit.generation.interrupt import DecodingInterrupted, interruptible

T = TypeVar("T")


class Strict(BaseModel):
    """A request body: unknown fields are refused (a typo is an error, not a silent default), and so
    is text that is not valid Unicode (a lone surrogate such as JSON's ``"\\ud800"``), by field."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        check_unicode([value] if isinstance(value, str) else
                      [text for text in value if isinstance(text, str)] if isinstance(value, list) else [])
        return value


class SamplingRequest(Strict):
    """The fields that OpenAI's generating APIs share; :meth:`sampling_changes` turns those given
    into changes of the model's :class:`~transformerkit.generation.config.GenerationConfig`."""

    model: str | None = None
    """Any name: one process serves one model (``GET /v1/models`` gives its id)."""
    temperature: float | None = Field(None, ge=0, le=100)
    """0: greedy decoding (the most probable token at every step)."""
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2 ** 63 - 1)
    user: str | None = None

    def sampling_changes(self) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if self.temperature is not None:
            changes |= {"do_sample": False} if self.temperature == 0 else {"do_sample": True,
                                                                           "temperature": self.temperature}
        if self.top_p is not None:
            changes["top_p"] = self.top_p
        if self.seed is not None:
            changes["seed"] = self.seed
        return changes


def one_to(most: int) -> AfterValidator:
    """The check of a field holding a string or a list of 1 to ``most`` strings (OpenAI's
    ``prompt`` and ``input``): ``Annotated[str | list[str], one_to(most)]``."""
    def check(value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= most:
            raise ValueError(f"give a string or a list of 1 to {most} strings")
        return value

    return AfterValidator(check)


class Metrics:
    """What ``GET /metrics`` reports (Prometheus text format), in a registry of the app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("transformerkit_requests", "HTTP requests answered", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram("transformerkit_request_seconds", "time to the response's start", ["path"],
                                 registry=self.registry)
        self.tokens = Counter("transformerkit_generated_tokens", "tokens generated", registry=self.registry)
        self.rows = Histogram("transformerkit_batch_rows", "sequences the model ran together per request",
                              buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.waiting = Gauge("transformerkit_queue_length", "requests waiting for the model", registry=self.registry)


@dataclass
class Server:
    """One served model directory: its name (the OpenAI ``model`` id), task, metrics, the lock that
    runs one batch at a time through the model (with at most ``max_waiting`` waiting for it), and
    the requests gathered into the next batch (:meth:`batched`)."""

    directory: Path
    max_waiting: int = 64
    max_batch_rows: int = 32
    max_wait_ms: float = 5.0
    request_timeout: float = 60.0
    """Seconds a request may take before it is answered 504 and its decoding stopped (0: no limit)."""
    task: str = ""
    backend: str = "transformerkit"
    """What runs the model: ``transformerkit`` (a model directory) or ``ctranslate2`` (an export)."""
    attention_shape: tuple[int, int] = (0, 0)
    """(layers, heads) of the attention an endpoint returns (cross-attention of a translator's
    decoder, self-attention of a text encoder), which the page at ``GET /`` offers to draw."""
    stopping: bool = False
    """Set when the server shuts down: every decoding under way stops at its next step."""
    busy_since: float | None = None
    """``time.monotonic()`` when the work holding the model now started (None: the model is free)."""
    created: int = field(default_factory=lambda: int(time.time()))
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: Metrics = field(default_factory=Metrics)
    _count: threading.Lock = field(default_factory=threading.Lock)
    _waiting: int = 0
    _pending: dict[Hashable, list[_Job]] = field(default_factory=dict)
    """Requests gathered for the next batch of their settings (``key``), not yet at the model."""
    _starting: set[Hashable] = field(default_factory=set)
    """Keys whose gathered requests wait for the model's next turn."""
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Taken by a batch from the moment it leaves the queue until it is done: batches go to the
    model one at a time, and each takes every request that arrived while the one before it ran."""
    _running: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.directory.resolve().name

    @contextmanager
    def model_turn(self) -> Iterator[None]:
        """Hold the model; a request that would make the queue longer than ``max_waiting`` is a 429."""
        with self._count:
            if self.lock.locked() and self._waiting >= self.max_waiting:
                raise HTTPException(429, f"the model is busy and {self._waiting} requests already wait for it: "
                                         f"try again")
            self._waiting += 1
            self.metrics.waiting.set(self.queue_length)
        with self.lock:
            with self._count:
                self._waiting -= 1
                self.metrics.waiting.set(self.queue_length)
            self.busy_since = time.monotonic()
            try:
                yield
            finally:
                self.busy_since = None

    @property
    def queue_length(self) -> int:
        """Requests waiting for the model: for the lock, or gathered into a batch that waits for its turn."""
        return self._waiting + sum(len(jobs) for jobs in self._pending.values())

    @property
    def stuck(self) -> bool:
        """Whether the work holding the model has run longer than a request may (``/health``: busy)."""
        started = self.busy_since
        return bool(self.request_timeout) and started is not None and time.monotonic() - started > self.request_timeout

    def run(self, work: Callable[[], T], rows: int = 1, abandoned: Callable[[], bool] = lambda: False) -> T:
        """``work()`` over ``rows`` sequences with the model to itself; a ValueError (input the model
        refuses) is a 400. Its decoding stops (:class:`DecodingInterrupted`) once ``abandoned()``
        (no request waits for it any more) or the server shuts down."""
        with self.model_turn(), interruptible(lambda: self.stopping or abandoned()):
            self.metrics.rows.observe(rows)
            try:
                return work()
            except ValueError as error:
                raise HTTPException(400, str(error)) from None

    def locked(self, items: Iterator[T], rows: int = 1) -> Generator[T, None, None]:
        """``items`` produced with the model to itself (a stream holds it until it ends or is closed)."""
        with self.model_turn():
            self.metrics.rows.observe(rows)
            yield from items

    async def batched(self, key: Hashable, inputs: list[Any], work: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """``work(inputs)`` (one output per input), run together with other requests of the same
        ``key`` that arrive within ``max_wait_ms`` (up to ``max_batch_rows`` inputs in all): their
        inputs are concatenated, and each request gets its own slice of the outputs. ``key`` holds
        every setting ``work`` depends on, so that a request's result is what it would be alone.
        A batch that fails is run again request by request, so that one bad input fails only its
        own request."""
        loop = asyncio.get_running_loop()
        if (self.lock.locked() or self._turn.locked()) and self.queue_length >= self.max_waiting:
            raise HTTPException(429, f"the model is busy and {self.queue_length} requests already wait for it: "
                                     f"try again")
        job = _Job(inputs, loop.create_future())
        jobs = self._pending.setdefault(key, [])
        jobs.append(job)
        self.metrics.waiting.set(self.queue_length)
        if sum(len(j.inputs) for j in jobs) >= self.max_batch_rows:  # full: no reason to wait
            self._start(key, work)
        elif len(jobs) == 1:
            loop.call_later(self.max_wait_ms / 1000, lambda: self._start(key, work))
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.request_timeout or None)
        except asyncio.TimeoutError:
            job.future.cancel()  # its batch stops decoding once no request in it waits
            raise HTTPException(504, f"the request took longer than the server's limit of {self.request_timeout:g} s "
                                     f"(--request-timeout); its work was stopped") from None
        except asyncio.CancelledError:  # the client went away
            job.future.cancel()
            raise

    def _start(self, key: Hashable, work: Callable[[list[Any]], list[Any]]) -> None:
        """Send the requests gathered under ``key`` to the model at its next turn (once per key: a
        batch waiting for its turn keeps gathering the requests that arrive meanwhile)."""
        if key in self._starting or not self._pending.get(key):
            return
        self._starting.add(key)
        task = asyncio.ensure_future(self._next_turn(key, work))
        self._running.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._running.discard)

    async def _next_turn(self, key: Hashable, work: Callable[[list[Any]], list[Any]]) -> None:
        """Wait for the model's turn, then run what waits under ``key``, up to ``max_batch_rows``
        inputs (whole requests, at least one); the rest waits for the following turn."""
        async with self._turn:
            self._starting.discard(key)
            jobs, rows = self._pending.pop(key, []), 0
            for count, job in enumerate(jobs):
                rows += len(job.inputs)
                if count and rows > self.max_batch_rows:
                    self._pending[key] = jobs[count:]
                    jobs = jobs[:count]
                    self._start(key, work)
                    break
            self.metrics.waiting.set(self.queue_length)
            await self._run_batch(jobs, work)

    async def _run_batch(self, jobs: list[_Job], work: Callable[[list[Any]], list[Any]]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # a request whose client went away is dropped
        if not jobs:
            return
        inputs = [x for job in jobs for x in job.inputs]
        try:
            outputs = await run_in_threadpool(self.run, lambda: work(inputs), len(inputs),
                                              lambda: all(job.future.done() for job in jobs))
        except DecodingInterrupted:  # every request of the batch timed out or went away, or the server stops
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(HTTPException(503, "the server is shutting down"))
            return
        except Exception as error:
            if len(jobs) == 1:
                if not jobs[0].future.done():
                    jobs[0].future.set_exception(error)
                return
            for job in jobs:  # find whose input it was: each on its own
                await self._run_batch([job], work)
            return
        start = 0
        for job in jobs:
            if not job.future.done():  # cancelled while the batch ran: its neighbours still get theirs
                job.future.set_result(outputs[start:start + len(job.inputs)])
            start += len(job.inputs)


@dataclass
class _Job:
    inputs: list[Any]
    future: asyncio.Future[list[Any]]


class RequestTooLarge(Exception):
    pass


def error_body(status: int, message: str, param: str | None = None) -> JSONResponse:
    """OpenAI's error shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


class LimitRequestSize:
    """ASGI middleware: a body over ``limit`` bytes is answered 413 before the endpoint runs (by its
    Content-Length, or while a chunked body arrives)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise RequestTooLarge
            return message

        try:
            await self.app(scope, counting, send)
        except RequestTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_body(413, f"the request body is over the server's limit of {self.limit} bytes")
        await response(scope, receive, send)


class CountRequests:
    """ASGI middleware: every answer counted by path and status, and the time to its start (the
    first byte of a stream). Paths that are no route count as ``other``."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[Any]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"] if any(getattr(r, "path", None) == scope["path"] for r in self.routes) else "other"

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(path, str(message["status"])).inc()
                self.metrics.latency.labels(path).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, counted)


def _field(location: tuple[Any, ...]) -> str | None:
    parts = [str(part) for part in location if part != "body"]
    return ".".join(parts) or None


def new_app(directory: Path, max_request_bytes: int, max_waiting: int, max_batch_rows: int,
            max_wait_ms: float, request_timeout: float) -> tuple[FastAPI, Server]:
    """A FastAPI app with the shared endpoints, metrics and error handling, and its :class:`Server`."""
    server = Server(directory, max_waiting, max_batch_rows, max_wait_ms, request_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.stopping = True  # shutting down (SIGTERM, Ctrl-C): decoding still under way stops

    app = FastAPI(title=f"transformerkit: {server.name}", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.server = server


    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first.get("type") == "json_invalid":
            return error_body(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'unreadable')})")
        param = _field(tuple(first.get("loc", ())))
        return error_body(400, f"{param or 'body'}: {first.get('msg', 'invalid')}", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_body(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def failure(request: Request, error: Exception) -> JSONResponse:
        return error_body(500, f"the model failed on this request: {type(error).__name__}: {error}")

    @app.get("/health")
    def health() -> Any:
        if server.stuck:  # a batch has run past its deadline: the model answers nothing meanwhile
            return JSONResponse({"status": "busy", "model": server.name, "task": server.task,
                                 "busy_seconds": round(time.monotonic() - (server.busy_since or 0), 1)}, 503)
        return {"status": "ok", "model": server.name, "task": server.task}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": server.created,
                                            "owned_by": "transformerkit"}]}

    app.add_middleware(LimitRequestSize, limit=max_request_bytes)
    app.add_middleware(CountRequests, metrics=server.metrics, routes=app.routes)  # the list the tasks' routes join
    return app, server

