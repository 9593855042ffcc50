from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.deps import PredictorDep

router = APIRouter(tags=["inspect"])


@router.get("/bn-stats", summary="Every BN layer's frozen statistics, in network order")
def bn_stats(
    predictor: PredictorDep,
    layer: Annotated[str | None, Query(description="only this BN layer, e.g. bn1")] = None,
    vectors: Annotated[
        bool, Query(description="false: summaries (min, max, mean) without the vectors")
    ] = True,
) -> dict[str, Any]:
    return predictor.bn_stats(layer=layer, vectors=vectors)
