"""GET /drift and POST /drift/reset: live traffic against the frozen BN statistics (service/monitoring/drift)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.http.auth import ADMIN_ERRORS, AdminOnly
from service.http.deps import PredictorDep
from service.http.schemas import DriftReport, DriftReset, errors
from service.inference.predictor import Predictor
from service.monitoring.drift import DriftMonitor

router = APIRouter(tags=["inspect"])


@router.get(
    "/drift",
    summary="Live traffic against the frozen BN statistics: a verdict, the input features, every BN layer",
    response_model=DriftReport,
    response_model_exclude_unset=True,
    responses=errors(422, 503),
)
def drift(
    predictor: PredictorDep,
    top: Annotated[int, Query(ge=1, le=1000, description="worst channels listed per layer")] = 5,
    features: Annotated[bool, Query(description="false: leave out the per-feature list of the input")] = True,
) -> dict[str, Any]:
    monitor = _monitor(predictor)
    if monitor is None:
        return _identity(predictor) | _DISABLED
    answer = _identity(predictor) | monitor.report(top=top, features=features)
    if predictor.feature_drift is not None:
        raw = predictor.feature_drift.report()
        answer["raw_features"] = raw
        if raw["verdict"] == "drift" and answer["verdict"] != "drift":
            drifting = [f["name"] for f in raw["features"] if f["verdict"] == "drift"]
            answer["verdict"], answer["alert"] = "drift", True
            answer["message"] = (
                f"the category frequencies or missing rates of {drifting} differ from training's "
                f"(PSI > {raw['psi_threshold']} or a missing rate off by more than {raw['missing_rate_gap']}); "
                + answer["message"]
            ).strip()
    return answer


@router.post(
    "/drift/reset",
    summary="Start a new drift window (this worker's, of this model version); needs the admin token",
    dependencies=[AdminOnly],
    response_model=DriftReset,
    response_model_exclude_unset=True,
    responses={**errors(400, 404, 503), **ADMIN_ERRORS},
)
def reset(predictor: PredictorDep) -> dict[str, Any]:
    monitor = _monitor(predictor)
    if monitor is None:
        return _identity(predictor) | _DISABLED
    monitor.reset()
    if predictor.feature_drift is not None:
        predictor.feature_drift.reset()
    return _identity(predictor) | {"enabled": True, "reset": True, "since": monitor.since}


_DISABLED = {
    "enabled": False,
    "verdict": "disabled",
    "alert": False,
    "message": "the drift monitor is off (BNSERVE_DRIFT_ENABLED=false)",
}


def _monitor(predictor: Predictor) -> DriftMonitor | None:
    predictor.require_ready()
    return predictor.drift


def _identity(predictor: Predictor) -> dict[str, Any]:
    artifact = predictor.require_ready()
    return {
        "model": predictor.model,
        "version": predictor.version,
        "artifact_sha256": artifact.weights_sha256,
    }
