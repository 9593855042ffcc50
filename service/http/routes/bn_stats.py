"""GET /bn-stats: every BN layer's frozen statistics, read from the unfolded network, in network order.

The same answer on both runtimes: the torch network's buffers, or the arrays the lean runtime computes from
(read from weights.safetensors); the fingerprint is recomputed from them at every request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query

from models.layers import BatchNormSpec
from models.reader import bn_fingerprint
from service.errors import NotFound
from service.http.deps import PredictorDep
from service.http.schemas import BNStats, errors
from service.inference.predictor import Predictor

router = APIRouter(tags=["inspect"])


@router.get(
    "/bn-stats",
    summary="Every BN layer's frozen statistics, in network order",
    response_model=BNStats,
    response_model_exclude_unset=True,
    responses=errors(404, 422, 503),
)
def bn_stats(
    predictor: PredictorDep,
    layer: Annotated[str | None, Query(description="only this BN layer, e.g. bn1")] = None,
    vectors: Annotated[
        bool, Query(description="false: summaries (min, max, mean) without the vectors")
    ] = True,
) -> dict[str, Any]:
    return bn_stats_view(predictor, layer=layer, vectors=vectors)


def bn_stats_view(predictor: Predictor, *, layer: str | None = None, vectors: bool = True) -> dict[str, Any]:
    """Gives back every BN layer's frozen statistics (or one layer's), read from the unfolded network."""
    artifact = predictor.require_ready()
    kind = artifact.manifest.bn_statistics.kind
    state, training = artifact.state(), set(artifact.training_bn_layers())
    specs = [s for s in artifact.manifest.layers if isinstance(s, BatchNormSpec)]
    layers = [_bn_entry(spec, state, vectors, kind, training=spec.name in training) for spec in specs]
    if layer is not None:
        names = [entry["name"] for entry in layers]
        if layer not in names:
            raise NotFound(f"no BN layer {layer!r}; the BN layers are {names}")
        layers = [entry for entry in layers if entry["name"] == layer]
    std = artifact.manifest.input_standardization
    return {
        "model": predictor.model,
        "version": predictor.version,
        "artifact_sha256": artifact.weights_sha256,
        "fingerprint": bn_fingerprint(state, [spec.name for spec in specs]),
        "artifact_fingerprint": artifact.bn_fingerprint,
        "statistics": kind,
        "bn_statistics": artifact.manifest.bn_statistics.model_dump(),
        "mode": "eval" if not training else "train",
        "input_standardization": {
            "layer": std.layer,
            "feature_names": artifact.manifest.input_columns,  # with preprocessing: its input columns
            **({"mean": std.mean, "std": std.std} if vectors else {}),
            "summary": {"mean": _summary(std.mean), "std": _summary(std.std)},
        },
        "layers": layers,
        "live": _live_drift(predictor),
    }


def _live_drift(predictor: Predictor) -> dict[str, Any]:
    """Gives back where live traffic stands against these statistics: GET /drift has the details."""
    href = f"/drift?model={predictor.model}&version={predictor.version}"
    if predictor.drift is None:
        return {"href": href, "enabled": False}
    scores = predictor.drift.scores()
    return {"href": href, "enabled": True, "verdict": scores["verdict"], "score": scores["score"]}


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "mean": math.fsum(values) / len(values)}


def _bn_entry(
    spec: BatchNormSpec, state: Mapping[str, np.ndarray], vectors: bool, statistics: str, *, training: bool
) -> dict[str, Any]:
    keys = (
        ("running_mean", "running_var", "weight", "bias") if spec.affine else ("running_mean", "running_var")
    )
    lists = {key: state[f"{spec.name}.{key}"].tolist() for key in keys}
    return {
        "name": spec.name,
        "kind": "2d" if spec.type == "BatchNorm2d" else "1d",
        "num_features": spec.num_features,
        "momentum": spec.momentum,
        "eps": spec.eps,
        "num_batches_tracked": int(state[f"{spec.name}.num_batches_tracked"]),
        "statistics": statistics,
        "training": training,
        **(lists if vectors else {}),
        "summary": {key: _summary(v) for key, v in lists.items()},
    }
