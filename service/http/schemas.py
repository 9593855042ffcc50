"""Request and response shapes, for the OpenAPI docs at /docs (the hot path parses bodies itself)."""

from __future__ import annotations

from pydantic import BaseModel, Field

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
