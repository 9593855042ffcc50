"""Request and response shapes, for the OpenAPI docs at /docs (the hot path parses bodies itself)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    version: str = Field(
        description="the version of the model that answered (a repository's directory number)"
    )
    artifact_sha256: str
    predictions: list[Prediction]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "breast_cancer",
                    "version": "1",
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


# ---------------------------------------------------------------------------------------------- repository

State = Literal["READY", "LOADING", "UNAVAILABLE"]


class VersionState(BaseModel):
    version: str = Field(description="a positive integer: the version directory's name")
    state: State
    reason: str = Field(description="why it is in this state: serving, refused (and why), not selected...")
    artifact_sha256: str | None = Field(None, description="the weights' SHA-256, once loaded")


class ModelState(BaseModel):
    name: str
    versions: list[VersionState]


class ModelsResponse(BaseModel):
    default: str | None = Field(description="the model a request that names none gets")
    models: list[ModelState]


class IndexEntry(BaseModel):
    """One entry of the Open Inference Protocol's repository index, plus the artifact's SHA-256."""

    name: str
    version: str
    state: State
    reason: str
    artifact_sha256: str | None = None


class IndexRequest(BaseModel):
    ready: bool = Field(False, description="true: only the versions READY for inference")


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="allow")  # the protocol lets a server ignore parameters it does not use
    version: str | int | None = Field(None, description="serve only this version (a rollback)")
    versions: list[str | int] | None = Field(None, description="serve exactly these versions")


class LoadRequest(BaseModel):
    parameters: LoadParameters = Field(default_factory=LoadParameters)


class LoadResponse(BaseModel):
    model: str
    serving: list[str] = Field(description="the versions serving after the request")
    refused: dict[str, str] = Field(description="versions that failed to load, with the reason")
