"""Request and response shapes, for the OpenAPI docs at /docs (the hot path parses bodies itself)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from models.preprocessing import (
    INDICATOR_SUFFIX,
    MISSING,
    OTHER,
    CategoricalFeature,
    Preprocessing,
    encoded_names,
)

BREAST_CANCER_ROW = [
    17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4,
    0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119,
    0.2654, 0.4601, 0.1189,
]  # fmt: skip


class PredictRequest(BaseModel):
    instances: list[list[float] | dict[str, float]] = Field(
        description="rows as arrays in feature order, or objects keyed by feature name (see /metadata)",
        min_length=1,
        examples=[[BREAST_CANCER_ROW], [{"mean radius": 17.99, "mean texture": 10.38, "...": 0.0}]],
    )


class Prediction(BaseModel):
    label: str | None = Field(None, description="classification: the most probable class label")
    probabilities: dict[str, float] | None = Field(None, description="classification: probability per label")
    value: float | None = Field(None, description="regression: the predicted value")


class PredictResponse(BaseModel):
    model: str
    artifact_sha256: str
    predictions: list[Prediction]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "breast_cancer",
                    "artifact_sha256": "3f1c…",
                    "predictions": [
                        {"label": "malignant", "probabilities": {"malignant": 0.9993, "benign": 0.0007}}
                    ],
                }
            ]
        }
    }


class ErrorResponse(BaseModel):
    error: str = Field(examples=["expected 30 features, got 29 at row 0"])


class FeatureInfo(BaseModel):
    """One feature of a /predict row, as GET /metadata lists it."""

    name: str
    type: Literal["numeric", "boolean", "categorical"]
    categories: list[str] | None = Field(
        None, description="categorical: the categories learned in training, each with its own input column"
    )
    missing: str = Field(description="how a missing value (null, or a missing token) is handled")
    unseen: str | None = Field(
        None, description="categorical: how a category never seen in training is handled"
    )
    input_columns: list[str] = Field(description="the network's input columns this feature becomes")


def feature_infos(feature_names: list[str], pre: Preprocessing | None) -> list[FeatureInfo]:
    """Gives back every feature's type, categories and missing-value handling."""
    if pre is None:
        return [
            FeatureInfo(
                name=n,
                type="numeric",
                missing="refused: every value must be a finite number",
                input_columns=[n],
            )
            for n in feature_names
        ]
    columns = iter(encoded_names(feature_names, pre))
    out = []
    for name, f in zip(feature_names, pre.features, strict=True):
        width = f.width if isinstance(f, CategoricalFeature) else 1 + f.indicator
        cols = [next(columns) for _ in range(width)]
        if isinstance(f, CategoricalFeature):
            fallback = (
                f"the <other> column ({name}={OTHER})" if f.other else "no column (every one-hot column 0)"
            )
            missing = (
                f"its own category, column {name}={MISSING}"
                if f.missing
                else f"as an unseen category: {fallback}"
            )
            out.append(
                FeatureInfo(
                    name=name,
                    type="categorical",
                    categories=f.categories,
                    missing=missing,
                    unseen=fallback,
                    input_columns=cols,
                )
            )
        else:
            indicator = f" and 1.0 in the indicator column {name}{INDICATOR_SUFFIX}" if f.indicator else ""
            out.append(
                FeatureInfo(
                    name=name,
                    type=f.kind,
                    missing=f"replaced by the training median {f.fill:g}{indicator}",
                    input_columns=cols,
                )
            )
    return out
