"""GET /bn-stats: every BN layer's frozen statistics, read from the unfolded network, in network order."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query
from torch import nn

from models.bn import batchnorm_layers, model_bn_fingerprint, training_bn_layers
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
    layers = [_bn_entry(name, bn, vectors, kind) for name, bn in batchnorm_layers(artifact.model)]
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
        "fingerprint": model_bn_fingerprint(artifact.model),
        "artifact_fingerprint": artifact.bn_fingerprint,
        "statistics": kind,
        "bn_statistics": artifact.manifest.bn_statistics.model_dump(),
        "mode": "eval" if not training_bn_layers(artifact.model) else "train",
        "input_standardization": {
            "layer": std.layer,
            "feature_names": artifact.manifest.feature_names,
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


def _bn_entry(name: str, bn: nn.Module, vectors: bool, statistics: str) -> dict[str, Any]:
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
    tensors = {"running_mean": bn.running_mean, "running_var": bn.running_var}
    if bn.affine:
        tensors |= {"weight": bn.weight, "bias": bn.bias}
    lists = {key: t.detach().cpu().tolist() for key, t in tensors.items()}
    return {
        "name": name,
        "kind": "2d" if isinstance(bn, nn.BatchNorm2d) else "1d",
        "num_features": bn.num_features,
        "momentum": bn.momentum,
        "eps": bn.eps,
        "num_batches_tracked": int(bn.num_batches_tracked),
        "statistics": statistics,
        "training": bn.training,
        **(lists if vectors else {}),
        "summary": {key: _summary(v) for key, v in lists.items()},
    }
