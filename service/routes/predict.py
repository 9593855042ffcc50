"""POST /predict: rows in, one prediction per row out.

``handle_predict`` answers at the ASGI level. ``BNServe.__call__`` (service/app.py) dispatches
``POST /predict`` to it before FastAPI's middleware stack and router, and records its metrics itself: for a
one-row request that stack cost more than the prediction (docs/PERFORMANCE.md). The FastAPI route below
documents the endpoint in the OpenAPI schema and answers identically wherever it is reached.

The answer is JSON unless the request's ``Accept`` prefers ``application/octet-stream`` to
``application/json`` (``prefers_float32``): then it is the bulk answer, raw little-endian float32 (B, K)
described by ``x-bnserve-*`` headers (service/answers.py). Errors are JSON either way.
"""

from __future__ import annotations

import functools

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from service.answers import FLOAT32_MEDIA_TYPE, Headers
from service.errors import PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.inputs import parse_float32_rows, parse_instances
from service.predictor import Predictor
from service.schemas import ErrorResponse, PredictRequest, PredictResponse
from service.settings import Settings

router = APIRouter(tags=["predict"])

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 503)}
_JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
_PARSERS = {b"application/json": parse_instances, b"application/octet-stream": parse_float32_rows}


class _ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


@router.post(
    "/predict",
    response_model=None,
    responses={
        200: {
            "model": PredictResponse,
            "description": "one prediction per row, as JSON; with `Accept: application/octet-stream`, raw "
            "little-endian float32 (B, K) instead",
            "content": {
                FLOAT32_MEDIA_TYPE: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "bulk answer: raw little-endian float32, row-major, shape in the "
                        "x-bnserve-shape header (B,K); columns in x-bnserve-columns (a JSON list: class "
                        'probabilities in /metadata class_labels order, or ["value"] for regression)',
                    }
                }
            },
        },
        **_ERRORS,  # type: ignore[dict-item]
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": PredictRequest.model_json_schema()},
                "application/octet-stream": {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "bulk rows: raw little-endian float32, row-major, features in "
                        "/metadata order, no header (B * F * 4 bytes)",
                    }
                },
            },
        }
    },
    summary="Predict with the frozen BN statistics (eval mode); one row or many",
)
async def predict(request: Request) -> Response:
    status, body, headers = await _answer(request.scope, request.receive)
    response = Response(body, status_code=status)
    response.raw_headers = [*headers, *response.raw_headers]  # content-length: Response's own
    return response


async def handle_predict(scope: Scope, receive: Receive, send: Send) -> int:
    """Answers one POST /predict at the ASGI level, bad input included; gives back the status it sent
    (499: the client left first, nothing sent). Unexpected errors propagate to the caller."""
    try:
        status, body, headers = await _answer(scope, receive)
    except ServiceError as e:
        status, body, headers = e.status_code, orjson.dumps({"error": e.message}), _JSON_HEADERS
    if status != 499:
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    return status


async def _answer(scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
    """Gives back (200, the answer, its headers), or (499, b"", []) when the client left; raises
    ServiceError on bad input."""
    state = scope["app"].state
    predictor: Predictor = state.predictor
    settings: Settings = state.settings
    content_type, declared, accept = b"", None, b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            declared = value
        elif name == b"accept":
            accept = value if not accept else accept + b"," + value
    parse = _PARSERS.get(content_type.split(b";")[0].strip().lower())
    if parse is None:
        got = content_type.decode("latin-1") or "none"
        raise UnsupportedMediaType(
            "expected Content-Type application/json (or application/octet-stream: raw little-endian float32 "
            f"rows), got {got!r}"
        )
    try:
        body = await _read_body(receive, settings.max_body_bytes, declared)
    except _ClientGone:
        return 499, b"", []
    rows = parse(body, predictor.feature_names, max_rows=settings.max_rows)
    if accept and prefers_float32(accept):
        return 200, *await predictor.predict_float32(rows)
    return 200, await predictor.predict_json(rows), _JSON_HEADERS


@functools.lru_cache(maxsize=256)  # a client sends the same Accept every time: one parse per distinct value
def prefers_float32(accept: bytes) -> bool:
    """Gives back True when an ``Accept`` header value ranks ``application/octet-stream`` above
    ``application/json``: each takes the quality of the most specific range that matches it (RFC 9110,
    12.5.1). A tie, or an ``Accept`` that names neither (``*/*``, ``text/html``), gets JSON, the default.

    Written here rather than taken from a library: the dependencies have no Accept parser, and the rule
    for two candidate types is these few lines.
    """
    json_q, json_rank, binary_q, binary_rank = 0.0, -1, 0.0, -1
    for part in accept.decode("latin-1").lower().split(","):
        media, *params = part.split(";")
        kind, _, sub = media.strip().partition("/")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # a malformed weight ranks nothing
        if kind == "*" and sub == "*":
            rank = 0
        elif kind == "application":
            rank = 1 if sub == "*" else 2
        else:
            continue
        if rank > json_rank and sub in ("*", "json"):
            json_q, json_rank = q, rank
        if rank > binary_rank and sub in ("*", "octet-stream"):
            binary_q, binary_rank = q, rank
    return binary_q > json_q


async def _read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"expected a body of at most {limit} bytes, got {declared.decode()}")
    chunks, size = [], 0
    while True:  # one message for a small body; a chunked upload is counted as it arrives
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"expected a body of at most {limit} bytes, got more")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
