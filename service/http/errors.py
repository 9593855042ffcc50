"""The one place errors are rendered: every error, the framework's own included, as ``{"error": "..."}``.

The hierarchy itself (``ServiceError`` and its status codes) is in service/errors.py, so that the inference
and monitoring code can raise without knowing about HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from service.errors import ServiceError

log = logging.getLogger("bnserve")

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_body(message: str) -> bytes:
    """Gives back the JSON of an error answer."""
    return orjson.dumps({"error": message})


Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, headers of a hot route's answer


def error_answer(error: ServiceError | None) -> Answer:
    """Gives back a hot route's answer for ``error``, rendered as ``{"error": ...}``; None: the 500 of an
    unexpected one."""
    if error is None:
        return 500, error_body("internal error"), JSON_HEADERS
    headers = JSON_HEADERS
    if error.headers:  # WWW-Authenticate with a 401
        headers = [*headers, *((k.lower().encode(), v.encode()) for k, v in error.headers.items())]
    return error.status_code, error_body(error.message), headers


async def send_answer(answer: Awaitable[Answer], send: Send) -> int:
    """Sends a hot route's answer, or its ``ServiceError`` rendered as ``{"error": ...}``; gives back the status
    sent (499: the client left first, nothing sent). Other errors propagate to the caller."""
    try:
        status, body, headers = await answer
    except ServiceError as e:
        status, body, headers = error_answer(e)
    if status != 499:
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    return status


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(message), status_code=status_code, media_type="application/json", headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Renders every error through ``error_response``."""

    async def service_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc.status_code, exc.message, headers=exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the routes"
        elif exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow")
            message = f"method {request.method} is not allowed on {request.url.path}; allowed: {allow}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=dict(exc.headers or {}))

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg')} (got {err.get('input')!r})")
        return error_response(422, "; ".join(parts) or "invalid request")

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
