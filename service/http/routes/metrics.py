"""GET /metrics: the Prometheus exposition (service/monitoring/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.http.deps import PredictorDep
from service.monitoring.metrics import Metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latency, rows per request and per forward pass, model, drift",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request, predictor: PredictorDep) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(predictor.drift), media_type=CONTENT_TYPE_LATEST)
