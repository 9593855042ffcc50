"""Request and response shapes: every JSON answer's model, so /openapi.json documents every field.

The hot path (POST /predict) parses and encodes bodies itself; these models are its documentation, checked
against its answers by the schema-driven tests (tests/service/http/test_openapi_fuzz.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.history import TrainingHistory
from models.manifest import BatchNormInfo, BNStatistics, StatisticsKind, Versions
from models.preprocessing import (
    INDICATOR_SUFFIX,
    MISSING,
    OTHER,
    CategoricalFeature,
    Preprocessing,
    encoded_names,
)
from models.repository import VERSION_PATTERN

DriftVerdict = Literal["ok", "drift", "insufficient_data", "error", "disabled"]

BREAST_CANCER_ROW = [
    17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4,
    0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119,
    0.2654, 0.4601, 0.1189,
]  # fmt: skip


class PredictRequest(BaseModel):
    instances: list[list[float | str | bool | None] | dict[str, float | str | bool | None]] = Field(
        description="rows as arrays in feature order, or objects keyed by feature name (see /metadata): "
        "numbers; for a model with preprocessing also strings (categorical), true/false (boolean) and null "
        "(missing)",
        min_length=1,
        examples=[[BREAST_CANCER_ROW], [{"mean radius": 17.99, "mean texture": 10.38, "...": 0.0}]],
    )


class Prediction(BaseModel):
    """A number is null where the network's float32 arithmetic overflowed (inputs far beyond the training range)."""

    label: str | None = Field(None, description="classification: the most probable class label")
    probabilities: dict[str, float | None] | None = Field(
        None, description="classification: probability per label"
    )
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


# ---------------------------------------------------------------------------------------------- /bn-stats


class Summary(BaseModel):
    min: float
    max: float
    mean: float


class InputStandardizationView(BaseModel):
    layer: str = Field(description="the network's Standardize layer")
    feature_names: list[str]
    mean: list[float] | None = Field(None, description="per feature; left out with ?vectors=false")
    std: list[float] | None = Field(None, description="per feature; left out with ?vectors=false")
    summary: dict[str, Summary] = Field(description="mean and std, each summarized")


class BNLayerView(BaseModel):
    name: str
    kind: Literal["1d", "2d"]
    num_features: int
    momentum: float | None = Field(description="None: a cumulative average")
    eps: float
    num_batches_tracked: int
    statistics: StatisticsKind = Field(description="ema (running averages) or precise (recomputed)")
    training: bool = Field(description="always false while serving")
    running_mean: list[float] | None = Field(None, description="left out with ?vectors=false")
    running_var: list[float] | None = Field(None, description="left out with ?vectors=false")
    weight: list[float] | None = Field(None, description="affine layers; left out with ?vectors=false")
    bias: list[float] | None = Field(None, description="affine layers; left out with ?vectors=false")
    summary: dict[str, Summary] = Field(description="each vector above, summarized")


class LiveDrift(BaseModel):
    href: str = Field(description="where the details are: GET /drift")
    enabled: bool
    verdict: DriftVerdict | None = Field(None, description="only while the monitor is enabled")
    score: float | None = Field(None, description="the worst drift score; null before any traffic")


class BNStats(BaseModel):
    model: str
    version: str = Field(
        description="the version of the model that answered (a repository's directory number)"
    )
    artifact_sha256: str
    fingerprint: str = Field(description="SHA-256 over every BN buffer of the loaded network, now")
    artifact_fingerprint: str = Field(description="the same, as recorded at export: equal while serving")
    statistics: StatisticsKind
    bn_statistics: BNStatistics
    mode: Literal["eval", "train"]
    input_standardization: InputStandardizationView
    layers: list[BNLayerView] = Field(description="every BN layer in network order, or the one ?layer= names")
    live: LiveDrift


# ---------------------------------------------------------------------------------------------- /metadata


class ServingInfo(BaseModel):
    runtime: Literal["torch", "lean"] = Field(
        description="what computes the network (BNSERVE_RUNTIME): torch, or lean (numpy, without torch)"
    )
    device: str
    bn_folded: bool
    fold_max_abs_diff: float | None = Field(
        description="folded vs unfolded on the canary inputs; null unfolded"
    )
    max_rows: int
    max_batch_rows: int
    max_wait_ms: float
    torch_threads: int = Field(description="forward threads: torch's intra-op pool, or numpy's BLAS on lean")


class Metadata(BaseModel):
    name: str
    version: str = Field(
        description="the version of the model that answered (a repository's directory number)"
    )
    task: Literal["classification", "regression"]
    feature_names: list[str] = Field(description="the order of a row's values in /predict")
    features: list[FeatureInfo] = Field(description="each feature's type, categories and missing handling")
    class_labels: list[str] | None = Field(description="classification: the labels, in output order")
    target_name: str | None
    input_shape: list[int]
    metrics: dict[str, float] = Field(description="validation metrics measured at export")
    training: dict[str, Any] = Field(description="the training configuration")
    artifact_sha256: str
    bn_fingerprint: str
    created_at: str
    format_version: int
    versions: Versions
    batchnorm: list[BatchNormInfo]
    bn_statistics: BNStatistics
    serving: ServingInfo


# ---------------------------------------------------------------------------------------------- /drift


class ChannelDrift(BaseModel):
    """A statistic is null where the window holds non-finite values (the network overflowed float32)."""

    feature: str | None = Field(None, description="input features: the feature's name")
    channel: int | None = Field(None, description="BN layers: the channel's index")
    score: float | None
    shift: float | None = Field(description="(window mean - frozen mean), in training standard deviations")
    var_ratio: float | None = Field(description="window variance / frozen variance; null where undefined")
    mean: float | None
    var: float | None
    frozen_mean: float | None
    frozen_var: float | None


class SiteReport(BaseModel):
    name: str
    kind: Literal["input", "1d", "2d"]
    channels: int
    rows: int | float | None
    score: float | None = Field(description="the worst channel's score")
    rms_shift: float | None
    max_abs_shift: float | None
    mean_abs_log_var_ratio: float | None
    worst_channels: list[ChannelDrift]
    features: list[ChannelDrift] | None = Field(None, description="input only, unless ?features=false")


class Worst(BaseModel):
    name: str
    score: float | None


class WindowInfo(BaseModel):
    mode: Literal["rows", "decay"]
    size: int | None = Field(None, description="rows mode: rows held")
    half_life_rows: float | None = Field(None, description="decay mode: a row's weight half-life")


class BinShares(BaseModel):
    live: float | None = Field(description="share of the window's rows; null while it is empty")
    training: float


class RawFeatureDrift(BaseModel):
    name: str
    kind: Literal["numeric", "boolean", "categorical"]
    missing_rate: float | None = Field(description="share of the window's rows where it was missing")
    training_missing_rate: float
    psi: float | None = Field(description="categorical and boolean: population stability index vs training")
    psi_threshold: float | None
    frequencies: dict[str, BinShares] | None = Field(
        description="categorical and boolean: each category (<other>: pooled and unseen, <missing>) live and in training"
    )
    verdict: Literal["ok", "drift", "insufficient_data"]


class RawFeaturesDrift(BaseModel):
    verdict: Literal["ok", "drift", "insufficient_data"]
    rows: int
    min_rows: int
    psi_threshold: float
    missing_rate_gap: float = Field(description="a missing rate further than this from training's drifts")
    features: list[RawFeatureDrift]


class DriftReport(BaseModel):
    """With the monitor off only model, artifact_sha256, enabled, verdict, alert and message are sent."""

    model: str
    version: str = Field(
        description="the version of the model that answered (a repository's directory number)"
    )
    artifact_sha256: str
    enabled: bool
    verdict: DriftVerdict
    alert: bool = Field(description="true while the verdict is drift")
    message: str = Field(description="the verdict in words")
    score: float | None = Field(None, description="the worst score of the input and every layer")
    threshold: float | None = None
    rows: int | float | None = Field(None, description="(effective) rows in the window")
    min_rows: int | None = None
    rows_seen: int | None = Field(None, description="rows taken in since the last reset")
    window: WindowInfo | None = None
    since: str | None = Field(None, description="when the window started (ISO 8601, UTC)")
    worst_layer: Worst | None = None
    worst_feature: Worst | None = None
    input: SiteReport | None = None
    layers: list[SiteReport] | None = None
    raw_features: RawFeaturesDrift | None = Field(
        None,
        description="models with preprocessing: category frequencies (PSI) and missing rates vs training",
    )


class DriftReset(BaseModel):
    """With the monitor off: model, artifact_sha256, enabled, verdict, alert and message."""

    model: str
    version: str = Field(
        description="the version of the model that answered (a repository's directory number)"
    )
    artifact_sha256: str
    enabled: bool
    reset: bool | None = None
    since: str | None = None
    verdict: DriftVerdict | None = None
    alert: bool | None = None
    message: str | None = None


# ---------------------------------------------------------------------------------------------- health


class Alive(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    status: Literal["ready"]
    model: str
    version: str = Field(
        description="the version of the model that answered (a repository's directory number)"
    )
    artifact_sha256: str


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Gives back the ``responses=`` entry documenting ``statuses`` as ``{"error": ...}`` answers."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses
    }


ERROR_DESCRIPTIONS = {
    400: "malformed request (a malformed model or version name included)",
    401: "a missing, empty or wrong bearer token (BNSERVE_READ_TOKEN, or BNSERVE_ADMIN_TOKEN where state changes)",
    403: "no admin token is configured (BNSERVE_ADMIN_TOKEN): the endpoints that change state are off",
    404: "no such thing (a model, version or BN layer of that name)",
    413: "body or row count over the limits",
    415: "a Content-Type other than application/json or application/octet-stream",
    422: "a request that is well formed but has wrong values; for query parameters too",
    503: "the model is not ready",
}


class HistoryResponse(BaseModel):
    """GET /history: the training history stored with the artifact (docs/ARTIFACT.md, ``history.json``)."""

    model: str = Field(description="the artifact's manifest name")
    version: str = Field(
        description="the version of the model that answered (a repository's directory number)"
    )
    artifact_sha256: str = Field(description="SHA-256 of the weights that are served")
    history: TrainingHistory = Field(
        description="per epoch the train and validation loss and metric; per BN layer the running statistics"
    )


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


VersionName = (
    Annotated[str, Field(pattern=VERSION_PATTERN)] | Annotated[int, Field(strict=True, ge=1, lt=10**18)]
)


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="allow")  # the protocol lets a server ignore parameters it does not use
    version: VersionName | None = Field(None, description="serve only this version (a rollback)")
    versions: list[VersionName] | None = Field(None, description="serve exactly these versions")


class LoadRequest(BaseModel):
    parameters: LoadParameters = Field(default_factory=LoadParameters)


class LoadResponse(BaseModel):
    model: str
    serving: list[str] = Field(description="the versions serving after the request")
    refused: dict[str, str] = Field(description="versions that failed to load, with the reason")
