"""GET /metrics: the Prometheus exposition (service/monitoring/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.http.deps import RegistryDep
from service.inference.predictor import Predictor
from service.inference.repository import ModelRegistry
from service.monitoring.drift import DriftMonitor
from service.monitoring.drift.features import FeatureDrift
from service.monitoring.metrics import Metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latency, rows per request and per forward pass, model, drift",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request, registry: RegistryDep) -> Response:
    series: Metrics = request.app.state.metrics
    return Response(
        series.render(drift_monitors(registry), feature_drifts(registry)), media_type=CONTENT_TYPE_LATEST
    )


def drift_monitors(registry: ModelRegistry[Predictor]) -> dict[tuple[str, str], DriftMonitor | None]:
    """Gives back the drift monitor of every serving version, by (model, version)."""
    return {(p.model or "", p.version): p.drift for p in registry.serving()}


def feature_drifts(registry: ModelRegistry[Predictor]) -> dict[tuple[str, str], FeatureDrift | None]:
    """Gives back the per-feature drift of every serving version (None but for table artifacts)."""
    return {(p.model or "", p.version): p.feature_drift for p in registry.serving()}
