"""uvicorn's httptools protocol, with the hot routes answered straight from the HTTP parser.

``python -m service`` serves with ``HotPathProtocol`` (``BNSERVE_HTTP_FAST_PATH=false``: uvicorn's own). A hot
request (POST /predict, POST /v2/models/.../infer) then runs the route's three steps (service/http/hot.py)
from the parser's callbacks: no ASGI scope, cycle, task or messages, and the answer is written from inside
the batch's completion, in the same turn of the event loop, so no task has to be woken for it. On a one-row
request that is most of the CPU a request costs beyond the model (docs/PERFORMANCE.md, "The protocol fast
path").

A request takes the fast path when it is a POST to a hot route with a Content-Length of at most
``max_body_bytes``, and nothing about it needs uvicorn's cycle: no chunked upload, no ``Expect:
100-continue``, no upgrade, no %-escaped path, no request ahead of it on its connection (a pipelined request
waits for the one before it, as uvicorn makes it), no root path, no access log (uvicorn writes one from its
cycle whenever its access logger has a handler), no middleware around the app but uvicorn's proxy headers,
``limit_concurrency`` not reached. Every other request takes uvicorn's ASGI path unchanged, where ``BNServe``
runs the same steps: the same answer, byte for byte, and the same request metrics.

Written against uvicorn's ``HttpToolsProtocol`` (pinned to the minor version tested, in pyproject.toml): its
parser callbacks, ``cycle`` (which a fast request stands in for, so that uvicorn's pipelining, shutdown and
disconnect handling see it), ``pipeline``, ``on_response_complete`` and the keep-alive timer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httptools
import numpy as np
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import NotReady, ServiceError
from service.http.asgi import BNServe, hot_route
from service.http.errors import JSON_HEADERS, Answer, error_answer
from service.http.hot import HotRoute, Job, declared_too_large

log = logging.getLogger("bnserve")


class HotPathProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol; hot requests to a ``BNServe`` app are answered without ASGI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's proxy-headers middleware changes the client address and scheme, which no hot route reads.
        app = self.app.app if isinstance(self.app, ProxyHeadersMiddleware) else self.app
        self._bnserve = app if isinstance(app, BNServe) else None  # None: no fast path
        # Constant for the app's life; read once per connection, not per request.
        self._max_body = self._bnserve.hot.settings.max_body_bytes if self._bnserve is not None else 0
        self._hot: HotRequest | None = None  # the request being parsed, when it takes the fast path
        self._defaults: list[tuple[bytes, bytes]] | None = None  # uvicorn's default headers, as last written
        self._defaults_block = b""
        self._idle_since: float | None = None  # when the last response was written; None: busy since

    # The keep-alive timer: uvicorn arms a new one after every response and cancels it on the next data,
    # which costs more than a one-row prediction's forward; here one timer per idle connection is armed,
    # and when it fires with the connection busy meanwhile it is simply dropped (the next response arms it).

    def on_response_complete(self) -> None:
        # uvicorn's, but for the keep-alive timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # data came in: busy until the next response

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def on_message_begin(self) -> None:
        # uvicorn builds its ASGI scope here; that waits for the headers, which say whether one is needed.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._hot = None

    def on_headers_complete(self) -> None:
        self._hot = self._fast_request()
        if self._hot is None:
            self._asgi_scope()
            super().on_headers_complete()
        else:
            self.cycle = self._hot  # type: ignore[assignment]  # uvicorn queues a pipelined request behind it

    def _asgi_scope(self) -> None:
        """Makes uvicorn's scope for the request whose headers were just parsed, as its on_message_begin
        would have."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_body(self, body: bytes) -> None:
        if self._hot is None:
            super().on_body(body)
        else:
            self._hot.chunks.append(body)

    def on_message_complete(self) -> None:
        if self._hot is None:
            super().on_message_complete()
        else:
            hot, self._hot = self._hot, None
            hot.begin(b"".join(hot.chunks))

    def _fast_request(self) -> HotRequest | None:
        """Gives back the fast path's request for the headers just parsed, or None: uvicorn's path."""
        app = self._bnserve
        if app is None or self.access_log or self.root_path or self.expect_100_continue:
            return None
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            return None  # a request ahead of this one on the connection is not answered yet
        if self.parser.get_method() != b"POST" or self.parser.should_upgrade():
            return None
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            return None  # uvicorn answers 503
        target = _TARGETS.get(self.url, _UNSEEN)
        if target is _UNSEEN:
            target = _remember_target(self.url)
        if target is None:
            return None
        route, label, path, query = target
        declared = None
        for name, value in self.headers:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                return None
        if declared is None or not declared.isdigit() or declared_too_large(declared, self._max_body):
            return None  # uvicorn's path reads (and refuses) what this one does not
        # What the hot routes read of a scope.
        scope = {"method": "POST", "path": path, "query_string": query, "headers": self.headers, "app": app}
        http_version = self.parser.get_http_version()
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        return HotRequest(self, app, route, label, scope, keep_alive)

    def write_answer(
        self, status: int, body: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """Writes a whole response as uvicorn's cycle would: its default headers (date, server), then the
        answer's, then the length."""
        defaults = self.server_state.default_headers  # replaced by uvicorn once a second (the date)
        if defaults is not self._defaults:
            self._defaults, self._defaults_block = defaults, _header_block(defaults)
        block = _JSON_BLOCK if headers is JSON_HEADERS else _header_block(headers)
        close = b"" if keep_alive else b"connection: close\r\n"
        self.transport.write(
            b"%s%s%scontent-length: %d\r\n%s\r\n%s"
            % (STATUS_LINE[status], self._defaults_block, block, len(body), close, body)
        )
        if not keep_alive:
            self.transport.close()


Target = tuple[HotRoute[Any], str, str, bytes]  # (route, its template, path, query string)
_UNSEEN: Any = object()
# Request targets (the raw URL of a request line) already seen -> their hot route, or None: not one, or not
# for the fast path. A client sends the same few targets over and over; the table is emptied when it grows
# past MAX_TARGETS, so that a client sending endless distinct ones costs no memory. Read and written on the
# event loop's thread alone (one loop per process).
_TARGETS: dict[bytes, Target | None] = {}
MAX_TARGETS = 1024


def _remember_target(raw: bytes) -> Target | None:
    """Gives back (and keeps in ``_TARGETS``) the hot route of a request target, None for uvicorn's path."""
    if raw.startswith(b"/") and b"?" not in raw and b"#" not in raw:
        raw_path, query = raw, b""  # what parse_url gives for an origin-form target without a query
    else:
        try:
            url = httptools.parse_url(raw)
        except httptools.HttpParserInvalidURLError:
            url = None
        raw_path, query = (url.path, url.query or b"") if url is not None else (b"", b"")
    target = None
    if raw_path.isascii() and b"%" not in raw_path:  # anything else: uvicorn's path decodes or refuses it
        path = raw_path.decode("ascii")
        hot = hot_route("POST", path)
        if hot is not None:
            target = (*hot, path, query)
    if len(_TARGETS) >= MAX_TARGETS:
        _TARGETS.clear()
    _TARGETS[raw] = target
    return target


def _header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """Gives back header lines as they go on the wire."""
    return b"".join(b"%s: %s\r\n" % header for header in headers)


_JSON_BLOCK = _header_block(JSON_HEADERS)


class _NoEvent:
    """uvicorn sets its cycle's message event when the connection is lost; a fast request waits on none."""

    def set(self) -> None:
        pass


class HotRequest:
    """One request on the fast path: uvicorn's cycle stand-in on its connection, and the batcher's waiter
    for its rows (``service.inference.batching.Waiter``), which writes the answer when they come back."""

    __slots__ = (
        "app",
        "chunks",
        "disconnected",
        "job",
        "keep_alive",
        "label",
        "protocol",
        "response_complete",
        "route",
        "scope",
        "started",
    )  # fmt: skip
    message_event = _NoEvent()

    def __init__(
        self,
        protocol: HotPathProtocol,
        app: BNServe,
        route: HotRoute[Any],
        label: str,
        scope: Any,
        keep_alive: bool,
    ) -> None:
        self.protocol, self.app, self.route, self.label, self.scope = protocol, app, route, label, scope
        # uvicorn's shutdown turns it off: the connection closes after the answer.
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.started = time.perf_counter()
        self.job: Job | None = None
        self.response_complete = False
        self.disconnected = False  # set by uvicorn when the connection is lost

    def begin(self, body: bytes) -> None:
        """Runs the route's first two steps on the whole body and queues the rows; answers at once when the
        request cannot be answered."""
        hot = self.app.hot
        try:
            checked = self.route.check(hot, self.scope)
            self.job = self.route.begin(hot, self.scope, checked, body)
            self.job.predictor.enqueue(self.job.rows, self)
        except ServiceError as e:
            self._end(error_answer(e))
        except Exception:
            log.exception("unhandled error on POST %s", self.label)
            self._end(error_answer(None))

    # The batcher's waiter: called once, on the loop's thread, from inside the batch's completion.

    def done(self) -> bool:
        return False  # even with its client gone, the job is finished: that releases its version

    def set_result(self, result: np.ndarray, /) -> None:
        assert self.job is not None
        try:
            answer = self.job.finish(*self.job.predictor.outputs(result))
        except ServiceError as e:
            answer = error_answer(e)
        except Exception:
            log.exception("unhandled error on POST %s", self.label)
            answer = error_answer(None)
        self._end(answer)

    def set_exception(self, exception: BaseException, /) -> None:
        if isinstance(exception, ServiceError):
            self._end(error_answer(exception))
        else:
            log.error("unhandled error on POST %s", self.label, exc_info=exception)
            self._end(error_answer(None))

    def cancel(self) -> bool:
        self._end(
            error_answer(NotReady("not ready: the model version closed before the request was answered"))
        )
        return True

    def _end(self, answer: Answer) -> None:
        """Releases the job's version, writes the answer (unless the client is gone), counts the request and
        lets uvicorn go on to the connection's next request."""
        if self.job is not None:
            self.job.lease.release()
            self.job = None
        status, body, headers = answer
        protocol = self.protocol
        if not self.disconnected and not protocol.transport.is_closing():
            protocol.write_answer(status, body, headers, self.keep_alive)
        self.response_complete = True
        self.app.hot.metrics.observe_request(self.label, "POST", status, time.perf_counter() - self.started)
        protocol.on_response_complete()
