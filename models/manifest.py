"""The manifest schema: everything a server needs to rebuild, verify and describe the network.

``manifest.json`` is validated against ``Manifest`` on load; docs/ARTIFACT.md describes every field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.layers import LayerSpec

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MANIFEST_CHECKSUM_FILE = "manifest.sha256"
WEIGHTS_FILE = "weights.safetensors"

Task = Literal["classification", "regression"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputStandardization(_Strict):
    """``(x - mean) / std`` per feature; ``std`` is 1 where the training split had zero variance."""

    layer: str
    mean: list[float]
    std: list[float]


class BatchNormInfo(_Strict):
    name: str
    kind: Literal["1d", "2d"]
    num_features: int
    momentum: float
    eps: float
    affine: bool
    num_batches_tracked: int
    statistics: Literal["ema"] = "ema"  # running stats are PyTorch's exponential moving average


class WeightsInfo(_Strict):
    file: str = WEIGHTS_FILE
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Canary(_Strict):
    """Raw input rows and the exact eval-mode outputs the exported network produced for them."""

    inputs: list[list[float]]
    outputs: list[list[float]]
    atol: float = 1e-5
    rtol: float = 1e-4


class Versions(_Strict):
    bnserve: str
    torch: str
    python: str


class Manifest(_Strict):
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
    batchnorm: list[BatchNormInfo]
    bn_fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights: WeightsInfo
    canary: Canary
    training: dict[str, Any]
    metrics: dict[str, float]

    @property
    def num_outputs(self) -> int:
        return len(self.class_labels) if self.class_labels is not None else 1
