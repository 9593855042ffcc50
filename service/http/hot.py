"""The hot routes' one implementation, and the two ways a request reaches it.

A hot route (POST /predict, the Open Inference Protocol's POST .../infer) answers in three synchronous steps:

    check(hot, scope)                 the headers: token, media type, declared length    -> the checked headers
    begin(hot, scope, checked, body)  a version leased, the body parsed into rows        -> a ``Job``
    job.finish(values, logits)        the batch output of the job's rows encoded         -> (status, body, headers)

Between ``begin`` and ``finish`` the rows wait in the version's micro-batcher. Each step raises
``ServiceError`` for a request it cannot answer (rendered as ``{"error": ...}``), and the job's lease is
released once it is finished, whatever happened.

Two drivers run those steps:
- ``HotRoute.__call__``, the ASGI app ``BNServe`` (asgi.py) hands a hot request to: it reads the body from
  ``receive`` and awaits the batch output in the request's task;
- ``HotPathProtocol`` (protocol.py), uvicorn's HTTP protocol with these routes answered straight from the
  parser: no ASGI cycle, no task, and the answer is written from the batch's completion, in the same turn of
  the event loop (docs/PERFORMANCE.md, "The protocol fast path").
Both give the same bytes for the same request (tests/service/http/test_protocol.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from starlette.types import Receive, Scope, Send

from service.errors import PayloadTooLarge
from service.http.errors import Answer, send_answer
from service.inference.inputs import TableRows
from service.inference.predictor import Predictor
from service.inference.repository.registry import Lease, ModelRegistry
from service.monitoring.metrics import Metrics
from service.settings import Settings

Finish = Callable[[np.ndarray, "np.ndarray | None"], Answer]  # (values, a classifier's logits) -> the answer
C = TypeVar("C", bound="Checked")


@dataclass(slots=True, frozen=True)
class HotState:
    """What the hot routes read of the app (``BNServe.hot``): the same objects as ``app.state``'s, as plain
    attributes. starlette's ``State`` looks each one up through a Python ``__getattr__``, about 0.3 µs a
    read, and a one-row request read it five times."""

    settings: Settings
    registry: ModelRegistry[Predictor]
    metrics: Metrics


class Checked(Protocol):
    """What ``check`` read from a request's headers; every route's has the declared body length."""

    declared: bytes | None  # Content-Length as sent, None without one


@dataclass(slots=True)
class Job:
    """One request between ``begin`` and ``finish``: its version's hold, that version's predictor, its rows
    and how to encode their output."""

    lease: Lease[Predictor]
    rows: np.ndarray | TableRows
    finish: Finish

    @property
    def predictor(self) -> Predictor:
        return self.lease.value


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


class HotRoute(ABC, Generic[C]):
    """A hot route: its three steps, and its ASGI app (``await route(scope, receive, send)`` gives back the
    status sent; 499: the client left first, nothing sent; unexpected errors propagate to the caller)."""

    @abstractmethod
    def check(self, hot: HotState, scope: Scope) -> C:
        """Gives back what the route needs from the headers; raises ServiceError for a request refused on
        its headers alone."""

    @abstractmethod
    def begin(self, hot: HotState, scope: Scope, checked: C, body: bytes) -> Job:
        """Gives back the job of a request whose whole body is ``body``: a version leased (the caller
        releases it), the rows parsed; raises ServiceError, holding nothing, for a request it cannot answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await send_answer(self._answer(scope, receive), send)

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        hot: HotState = scope["app"].hot
        checked = self.check(hot, scope)
        try:
            body = await read_body(receive, hot.settings.max_body_bytes, checked.declared)
        except ClientGone:
            return 499, b"", []
        job = self.begin(hot, scope, checked, body)
        try:
            out = await job.predictor.enqueue(job.rows)
            return job.finish(*job.predictor.outputs(out))
        finally:
            job.lease.release()


def declared_too_large(declared: bytes | None, limit: int) -> bool:
    """Gives back whether a Content-Length says more than ``limit`` bytes."""
    return declared is not None and declared.isdigit() and int(declared) > limit


async def read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    """Gives back the request's whole body, at most ``limit`` bytes; raises PayloadTooLarge past it (as
    soon as the Content-Length says so), ClientGone when the client disconnects first."""
    if declared_too_large(declared, limit):
        assert declared is not None
        raise PayloadTooLarge(f"expected a body of at most {limit} bytes, got {declared.decode()}")
    chunks, size = [], 0
    while True:  # one message for a small body; a chunked upload is counted as it arrives
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"expected a body of at most {limit} bytes, got more")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
