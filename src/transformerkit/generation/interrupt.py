"""Stopping a decoding loop from outside, as Hugging Face's ``StoppingCriteria`` stop ``generate``:
the HTTP server ends the decoding of requests whose deadline passed or whose clients went away,
and all decoding when it shuts down.

Each decoding loop (:func:`~transformerkit.generation.sampling.generate_tokens`,
:func:`~transformerkit.generation.search.beam_search`) calls :func:`check_interrupt` once per
step; code that runs decoding on a worker thread wraps it in :func:`interruptible` with the
condition to stop on. The condition belongs to the thread that set it: loops on other threads
run on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


class DecodingInterrupted(Exception):
    """Raised by :func:`check_interrupt` inside a decoding loop whose stop condition became true."""


@contextmanager
def interruptible(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Decoding on this thread inside the block stops, at its next step, once ``should_stop()``."""
    previous = getattr(_local, "should_stop", None)
    _local.should_stop = should_stop
    try:
        yield
    finally:
        _local.should_stop = previous


def check_interrupt() -> None:
    """Raise :class:`DecodingInterrupted` if this thread's stop condition is true (one call a step)."""
    should_stop = getattr(_local, "should_stop", None)
    if should_stop is not None and should_stop():
        raise DecodingInterrupted("decoding was stopped")
