"""GET /healthz (alive) and GET /readyz (loaded and self-tested), for probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.errors import NotReady
from service.http.deps import PredictorDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Alive: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz", summary="Ready: the artifact is loaded and passed its canary self-test (503 otherwise)"
)
def readyz(predictor: PredictorDep) -> dict[str, Any]:
    if not predictor.ready:
        raise NotReady(f"not ready: {predictor.error}")
    artifact = predictor.require_ready()
    return {"status": "ready", "model": artifact.manifest.name, "artifact_sha256": artifact.weights_sha256}
