from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import PredictorDep
from service.errors import NotReady

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


@router.get(
    "/metadata", summary="Task, features, classes, metrics, training configuration, artifact identity"
)
def metadata(predictor: PredictorDep) -> dict[str, Any]:
    return predictor.metadata()
