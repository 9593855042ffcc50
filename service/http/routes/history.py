"""GET /history: the training history the artifact carries (``history.json``), for the page's curves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from models.errors import ManifestError
from models.history import HISTORY_FILE, read_history
from service.errors import NotFound
from service.http.deps import PredictorDep
from service.http.schemas import HistoryResponse, errors

router = APIRouter(tags=["inspect"])


@router.get(
    "/history",
    response_model=HistoryResponse,
    responses=errors(404, 422, 503),
    summary="The training history: loss and metric per epoch, each BN layer's running statistics per epoch",
)
def history(
    predictor: PredictorDep,
    model: Annotated[str | None, Query(description="model name (default: the served model)")] = None,
    version: Annotated[
        str | None, Query(description="model version (a single artifact is version 1)")
    ] = None,
) -> HistoryResponse:
    artifact = predictor.require_ready()
    name = artifact.manifest.name
    if (model is not None and model != name) or (version is not None and version != "1"):
        raise NotFound(
            f"no model {model or name!r} version {version or '1'!r}; this server serves {name!r} version '1'"
        )
    try:
        recorded = read_history(artifact)
    except ManifestError as e:
        raise NotFound(f"the artifact's {HISTORY_FILE} cannot be read: {e}") from None
    if recorded is None:
        raise NotFound(
            f"model {name!r} has no training history: its artifact has no {HISTORY_FILE} (trained before "
            "bnserve recorded one, or saved without it)"
        )
    return HistoryResponse(model=name, artifact_sha256=artifact.weights_sha256, history=recorded)
