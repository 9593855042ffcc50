"""POST /predict: rows in, one prediction per row out; a hot route (service/http/hot.py), ``Predict``.

``Predict`` is one object that both answers the route and describes it: its ``check`` and ``begin`` are run
straight from the HTTP parser by the protocol fast path (service/http/protocol.py), or by ``BNServe``
(service/http/asgi.py) before FastAPI's middleware stack and router, whose layers cost more than a one-row
prediction (docs/PERFORMANCE.md); the same object is the endpoint of the router's ``/predict`` route (so
other methods get 405) and ``Predict.openapi`` is what /openapi.json says of it.

The answer is JSON unless the request's ``Accept`` prefers ``application/octet-stream`` to
``application/json`` (``prefers_float32``): then it is the bulk answer, raw little-endian float32 (B, K)
described by ``x-bnserve-*`` headers (service/inference/answers.py). Errors are JSON either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from pydantic import BaseModel
from starlette.routing import Match, Route
from starlette.types import Scope

from models.repository import MODEL_NAME_PATTERN, VERSION_PATTERN
from service.errors import UnsupportedMediaType
from service.http.auth import check_reader
from service.http.errors import JSON_HEADERS
from service.http.hot import HotRoute, HotState, Job
from service.http.schemas import ERROR_DESCRIPTIONS, ErrorResponse, PredictRequest, PredictResponse
from service.inference.answers import FLOAT32_MEDIA_TYPE
from service.inference.inputs import TableRows, media_type, parse_float32_rows, parse_instances

PATH = "/predict"
ERROR_STATUSES = (400, 401, 404, 413, 415, 422, 503)
Parser = Callable[..., np.ndarray | TableRows]  # (body, feature_names, *, max_rows, encoder) -> rows
_PARSERS: dict[bytes, Parser] = {
    b"application/json": parse_instances,
    b"application/octet-stream": parse_float32_rows,
}


@dataclass(slots=True)
class _Checked:
    parse: Parser
    accept: bytes
    declared: bytes | None


class Predict(HotRoute[_Checked]):
    """POST /predict as a hot route (service/http/hot.py): the ASGI app ``BNServe`` hands it to, and the
    steps the protocol fast path runs."""

    def check(self, hot: HotState, scope: Scope) -> _Checked:
        settings = hot.settings
        content_type, declared, accept, authorization = b"", None, b"", None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
            elif name == b"accept":
                accept = value if not accept else accept + b"," + value
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        if settings.read_token is not None:
            check_reader(settings, authorization)
        parse = _PARSERS.get(media_type(content_type))
        if parse is None:
            got = content_type.decode("latin-1") or "none"
            raise UnsupportedMediaType(
                "expected Content-Type application/json (or application/octet-stream: raw little-endian "
                f"float32 rows), got {got!r}"
            )
        return _Checked(parse, accept, declared)

    def begin(self, hot: HotState, scope: Scope, checked: _Checked, body: bytes) -> Job:
        registry, settings = hot.registry, hot.settings
        model, version = _model_and_version(scope["query_string"]) if scope["query_string"] else (None, None)
        lease = registry.lease(model, version)  # the whole request runs on this one version
        try:
            predictor = lease.value
            rows = checked.parse(
                body, predictor.feature_names, max_rows=settings.max_rows, encoder=predictor.encoder
            )
        except BaseException:
            lease.release()
            raise
        answers = predictor.answers
        assert answers is not None  # feature_names raised NotReady otherwise
        if checked.accept and prefers_float32(checked.accept):
            return Job(lease, rows, lambda out, _: (200, *answers.encode_float32(out)))
        return Job(lease, rows, lambda out, _: (200, answers.encode(out), JSON_HEADERS))

    @staticmethod
    def openapi(
        components: dict[str, Any],
        *,
        feature_names: list[str] | None = None,
        kinds: list[str] | None = None,
        max_rows: int | None = None,
    ) -> dict[str, Any]:
        """Gives back the OpenAPI path item of POST /predict; adds the schemas it refers to ``components``.

        With the model's ``feature_names`` (and the ``max_rows`` limit) the request schema is exactly what
        is accepted: rows of that many finite float32 numbers, or objects with exactly those keys. With the
        ``kinds`` of a model with preprocessing, each value is of its feature's kind, or null (missing).
        """
        request = PredictRequest.model_json_schema()  # inline, as /docs shows it: it refers to nothing
        if feature_names is not None:
            request["properties"]["instances"] |= {
                "items": _row_schema(feature_names, kinds),
                **({"maxItems": max_rows} if max_rows is not None else {}),
            }
        answer = _schema(PredictResponse, components)
        error = _schema(ErrorResponse, components)
        errors = {
            str(code): {
                "description": ERROR_DESCRIPTIONS[code],
                "content": {"application/json": {"schema": error}},
            }
            for code in ERROR_STATUSES
        }
        return {
            "post": {
                "tags": ["predict"],
                "summary": "Predict with the frozen BN statistics (eval mode); one row or many",
                "operationId": "predict",
                "parameters": [
                    {
                        "name": "model",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
                        "description": "the model (default: BNSERVE_DEFAULT_MODEL, else the only or first one)",
                    },
                    {
                        "name": "version",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": VERSION_PATTERN},
                        "description": "the version (default: the model's highest version serving)",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": request},
                        FLOAT32_MEDIA_TYPE: {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": "bulk rows: raw little-endian float32, row-major, features in "
                                "/metadata order, no header (B * F * 4 bytes)",
                            }
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "one prediction per row, as JSON; with `Accept: application/octet-stream`, "
                        "raw little-endian float32 (B, K) instead",
                        "content": {
                            "application/json": {"schema": answer},
                            FLOAT32_MEDIA_TYPE: {
                                "schema": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "bulk answer: raw little-endian float32, row-major, shape in "
                                    "the x-bnserve-shape header (B,K); columns in x-bnserve-columns (a JSON "
                                    "list: class probabilities in /metadata class_labels order, or "
                                    '["value"] for regression)',
                                }
                            },
                        },
                    },
                    **errors,
                },
            }
        }


class PredictRoute(Route):
    """The router's /predict: ``Predict`` itself as the endpoint, so other methods get 405; it names itself in
    the scope, as FastAPI's own routes do, so that those requests are counted under ``/predict`` too."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


predict = Predict()
route = PredictRoute(PATH, endpoint=predict, methods=["POST"])


def _schema(
    model: type[BaseModel], components: dict[str, Any], *, mode: str = "serialization"
) -> dict[str, Any]:
    """Gives back a reference to ``model``'s JSON schema, which is added to ``components`` with its own."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


FLOAT32_MAX = 3.4028234663852886e38


def _row_schema(feature_names: list[str], kinds: list[str] | None = None) -> dict[str, Any]:
    """Gives back the JSON schema of one row of this model: an array in feature order, or an object."""
    number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    n = len(feature_names)
    if kinds is None:
        values = [number] * n
        items: dict[str, Any] = {"items": number}
    else:
        kind_schema = {"numeric": number, "boolean": {"type": "boolean"}, "categorical": {"type": "string"}}
        values = [{"anyOf": [kind_schema[k], {"type": "null"}]} for k in kinds]
        items = {"prefixItems": values}
    return {
        "anyOf": [
            {"type": "array", **items, "minItems": n, "maxItems": n, "title": "row in feature order"},
            {
                "type": "object",
                "properties": dict(zip(feature_names, values, strict=True)),
                "required": feature_names,
                "additionalProperties": False,
                "title": "row keyed by feature name (unknown keys are refused with 422)",
            },
        ]
    }


def _model_and_version(query: bytes) -> tuple[str | None, str | None]:
    """Gives back ``?model=`` and ``?version=`` (None when absent); the registry validates them."""
    params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    model, version = params.get("model"), params.get("version")
    return (model[-1] if model else None), (version[-1] if version else None)


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
