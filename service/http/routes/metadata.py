"""GET /metadata: what the model is (task, features, classes, training) and how it is served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.http.deps import PredictorDep
from service.http.schemas import Metadata, errors, feature_infos
from service.inference.predictor import Predictor

router = APIRouter(tags=["health"])


@router.get(
    "/metadata",
    summary="Task, features, classes, metrics, training configuration, artifact identity",
    response_model=Metadata,
    responses=errors(503),
)
def metadata(predictor: PredictorDep) -> dict[str, Any]:
    return metadata_view(predictor)


def metadata_view(predictor: Predictor) -> dict[str, Any]:
    artifact = predictor.require_ready()
    m = artifact.manifest
    s = predictor.settings
    return {
        "name": predictor.model,
        "version": predictor.version,
        "task": m.task,
        "feature_names": m.feature_names,
        "features": [f.model_dump() for f in feature_infos(m.feature_names, m.preprocessing)],
        "class_labels": m.class_labels,
        "target_name": m.target_name,
        "input_shape": m.input_shape,
        "metrics": m.metrics,
        "training": m.training,
        "artifact_sha256": artifact.weights_sha256,
        "bn_fingerprint": artifact.bn_fingerprint,
        "created_at": m.created_at,
        "format_version": m.format_version,
        "versions": m.versions.model_dump(),
        "batchnorm": [b.model_dump() for b in artifact.batchnorm],
        "bn_statistics": m.bn_statistics.model_dump(),
        "serving": {
            "runtime": s.runtime,
            "device": str(predictor.device),
            "bn_folded": s.fold_bn,
            "fold_max_abs_diff": predictor.fold_max_abs_diff,
            "max_rows": s.max_rows,
            "max_batch_rows": s.max_batch_rows,
            "max_wait_ms": s.max_wait_ms,
            "torch_threads": s.torch_threads,
        },
    }
