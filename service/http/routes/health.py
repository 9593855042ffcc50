"""GET /healthz (alive) and GET /readyz (loaded and self-tested), for probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.errors import NotReady, ServiceError
from service.http.deps import RegistryDep
from service.http.schemas import Alive, Ready, errors

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Alive: the process answers", response_model=Alive)
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Ready: the artifact is loaded and passed its canary self-test (503 otherwise)",
    response_model=Ready,
    responses=errors(503),
)
def readyz(registry: RegistryDep) -> dict[str, Any]:
    try:
        with registry.lease() as served:
            predictor = served.value
            return {
                "status": "ready",
                "model": predictor.model,
                "version": predictor.version,
                "artifact_sha256": predictor.artifact_sha256,
            }
    except ServiceError as e:  # the default model has no version serving
        raise NotReady(f"not ready: {e.message}") from None
