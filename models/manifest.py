"""The manifest schema: everything a server needs to rebuild, verify and describe the network.

``manifest.json`` is validated against ``Manifest`` on load; docs/ARTIFACT.md describes every field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.layers import LayerSpec
from models.preprocessing import Preprocessing, input_columns

FORMAT_VERSION = 2  # what save_artifact writes
READABLE_FORMAT_VERSIONS = (1, 2)  # what load_artifact reads; a version 1 manifest is upgraded in memory
MANIFEST_FILE = "manifest.json"
MANIFEST_CHECKSUM_FILE = "manifest.sha256"
WEIGHTS_FILE = "weights.safetensors"

Task = Literal["classification", "regression"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputStandardization(_Strict):
    """``(x - mean) / std`` per feature; ``std`` is 1 where the training split had zero variance."""

    layer: str
    mean: list[float]
    std: list[float]


StatisticsKind = Literal["ema", "precise"]


class BatchNormInfo(_Strict):
    """One BN layer as a reader sees it. Format 1 stored this list in the manifest; format 2 derives it from
    ``layers`` and the weights (``Artifact.batchnorm``), so each fact is stored once."""

    name: str
    kind: Literal["1d", "2d"]
    num_features: int
    momentum: float
    eps: float
    affine: bool
    num_batches_tracked: int
    statistics: StatisticsKind = "ema"


class LayerStatisticsGap(_Strict):
    """How far the training EMA was from the precise population statistics of one BN layer."""

    layer: str
    max_abs_mean_shift: float = Field(
        ge=0
    )  # max over channels |ema_mean - precise_mean| / sqrt(precise_var + eps)
    max_abs_log_var_ratio: float = Field(
        ge=0
    )  # max over channels |log((ema_var + eps) / (precise_var + eps))|


class BNStatistics(_Strict):
    """Which statistics the BN buffers hold, and how they were made (format 2)."""

    kind: StatisticsKind = "ema"  # ema: PyTorch's running average; precise: population statistics recomputed
    world_size: int = Field(default=1, ge=1)  # processes (ranks) that trained the network
    ema_gap: list[LayerStatisticsGap] | None = None  # with kind "precise": the EMA's distance, per BN layer


class WeightsInfo(_Strict):
    file: str = WEIGHTS_FILE
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


RawValue = float | bool | str | None  # a raw cell: numbers, or with ``preprocessing`` also text and null


class Canary(_Strict):
    """Raw input rows and the exact eval-mode outputs the exported network produced for them."""

    inputs: list[list[RawValue]]
    outputs: list[list[float]]
    atol: float = 1e-5
    rtol: float = 1e-4


class Versions(_Strict):
    bnserve: str
    torch: str
    python: str


class Manifest(_Strict):
    """Format 2. A format 1 manifest is read as ``ManifestV1`` and upgraded with ``from_v1``."""

    format_version: int
    name: str
    task: Task
    created_at: str  # ISO 8601, UTC
    versions: Versions
    feature_names: list[str]
    class_labels: list[str] | None  # classification: label of output i; regression: None
    target_name: str | None = None
    input_shape: list[int]  # shape of one row as sent, before the network's own Reshape
    layers: list[LayerSpec]
    input_standardization: InputStandardization
    # Raw rows -> the network's input (categories, missing values); None: rows go in as they are.
    preprocessing: Preprocessing | None = None
    bn_statistics: BNStatistics = Field(default_factory=BNStatistics)
    bn_fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights: WeightsInfo
    files: dict[str, Sha256] = Field(
        default_factory=dict
    )  # extra file name -> SHA-256, each verified on load
    canary: Canary
    training: dict[str, Any]
    metrics: dict[str, float]

    @classmethod
    def from_v1(cls, v1: ManifestV1) -> Manifest:
        """Gives back the format 2 view of a format 1 manifest (``format_version`` stays 1)."""
        data = v1.model_dump()
        data.pop("batchnorm")
        return cls.model_validate(data)

    @property
    def num_outputs(self) -> int:
        return len(self.class_labels) if self.class_labels is not None else 1

    @property
    def input_columns(self) -> list[str]:
        """The name of each input column of the network: the features, or what preprocessing makes of them."""
        return input_columns(self.feature_names, self.preprocessing)

    @property
    def input_width(self) -> int:
        """The number of input columns the network takes: the raw features, or what preprocessing makes."""
        return len(self.feature_names) if self.preprocessing is None else self.preprocessing.width


class ManifestV1(_Strict):
    """Format 1, as written by bnserve 0.1.0 before format 2: the BN settings repeated in ``batchnorm``."""

    format_version: int
    name: str
    task: Task
    created_at: str
    versions: Versions
    feature_names: list[str]
    class_labels: list[str] | None
    target_name: str | None = None
    input_shape: list[int]
    layers: list[LayerSpec]
    input_standardization: InputStandardization
    batchnorm: list[BatchNormInfo]
    bn_fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights: WeightsInfo
    canary: Canary
    training: dict[str, Any]
    metrics: dict[str, float]
