"""GET /history: the training history the artifact carries (``history.json``), for the page's curves."""

from __future__ import annotations

from fastapi import APIRouter

from models.errors import ManifestError
from models.history import HISTORY_FILE, read_history
from service.errors import NotFound
from service.http.deps import PredictorDep
from service.http.schemas import HistoryResponse, errors

router = APIRouter(tags=["inspect"])


@router.get(
    "/history",
    response_model=HistoryResponse,
    responses=errors(400, 404, 422, 503),
    summary="The training history: loss and metric per epoch, each BN layer's running statistics per epoch",
)
def history(predictor: PredictorDep) -> HistoryResponse:
    """``?model=&version=`` (PredictorDep) pick the version, as for every view."""
    artifact = predictor.require_ready()
    name = predictor.model or artifact.manifest.name
    try:
        recorded = read_history(artifact)
    except ManifestError as e:
        raise NotFound(f"the artifact's {HISTORY_FILE} cannot be read: {e}") from None
    if recorded is None:
        raise NotFound(
            f"model {name!r} has no training history: its artifact has no {HISTORY_FILE} (trained before "
            "bnserve recorded one, or saved without it)"
        )
    return HistoryResponse(
        model=name, version=predictor.version, artifact_sha256=artifact.weights_sha256, history=recorded
    )
