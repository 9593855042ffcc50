from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.deps import PredictorDep, SettingsDep
from service.errors import PayloadTooLarge, UnsupportedMediaType
from service.inputs import parse_instances
from service.schemas import ErrorResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 503)}


@router.post(
    "/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, **_ERRORS},  # type: ignore[dict-item]
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    },
    summary="Predict with the frozen BN statistics (eval mode); one row or many",
)
async def predict(request: Request, predictor: PredictorDep, settings: SettingsDep) -> Response:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(f"expected Content-Type application/json, got {content_type or 'none'!r}")
    body = await _read_body(request, settings.max_body_bytes)
    rows = parse_instances(body, predictor.feature_names, max_rows=settings.max_rows)
    answer = await predictor.predict(rows)
    return Response(orjson.dumps(answer), media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"expected a body of at most {limit} bytes, got {declared}")
    if declared is not None:
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked upload: count as it arrives
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"expected a body of at most {limit} bytes, got more")
        chunks.append(chunk)
    return b"".join(chunks)
