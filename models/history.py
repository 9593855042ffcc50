"""The training history stored with an artifact: ``history.json``, one of the manifest's checksummed ``files``.

    history = read_history(load_artifact("artifacts/breast_cancer"))   # TrainingHistory, or None
    [e.val["accuracy"] for e in history.epochs]                       # the validation curve

Training writes it (``training.history.HistoryRecorder``); the service shows it. Older artifacts have no
such file and keep loading: ``read_history`` then gives back None. docs/ARTIFACT.md describes the fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import ManifestError
from models.manifest import Task

if TYPE_CHECKING:
    from models.reader import VerifiedArtifact

HISTORY_FILE = "history.json"
HISTORY_SCHEMA_VERSION: Literal[1] = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Summary(_Strict):
    """The smallest, largest and mean value of one vector (over a layer's channels)."""

    min: float
    max: float
    mean: float


class EpochRecord(_Strict):
    """One epoch: ``train`` holds the running loss (and accuracy) averaged over the epoch's training-mode
    batches; ``val`` the eval-mode metrics on the validation split after the epoch."""

    epoch: int = Field(ge=1)
    steps: int = Field(ge=0)  # optimizer steps taken so far, this epoch included
    seconds: float = Field(ge=0)  # wall time since training started
    train: dict[str, float]
    val: dict[str, float]


class RunningStatsPoint(_Strict):
    """A BN layer's running statistics at the end of one epoch, summarized over its channels."""

    epoch: int = Field(ge=1)
    num_batches_tracked: int = Field(ge=0)
    running_mean: Summary
    running_var: Summary
    # RMS over channels of the change of running_mean since the previous epoch (or since the initial 0),
    # in units of the current running std: how far the EMA still moves.
    mean_change: float = Field(ge=0)


class BatchNormHistory(_Strict):
    name: str
    num_features: int = Field(gt=0)
    trajectory: list[RunningStatsPoint]


class TrainingHistory(_Strict):
    schema_version: Literal[1] = HISTORY_SCHEMA_VERSION
    task: Task
    metric: str  # the headline validation metric: accuracy (classification) or r2 (regression)
    steps_per_epoch: int = Field(ge=1)
    epochs: list[EpochRecord]
    batchnorm: list[BatchNormHistory]

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def parse_history(data: bytes, *, where: Path | str = HISTORY_FILE) -> TrainingHistory:
    """Gives back the history in ``data``; raises ``ManifestError`` naming the file and the problem."""
    try:
        return TrainingHistory.model_validate(orjson.loads(data))
    except orjson.JSONDecodeError as e:
        raise ManifestError(f"not valid JSON: {e}", path=where) from None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise ManifestError(f"does not match the history schema: {problems}", path=where) from None


def read_history(artifact: VerifiedArtifact) -> TrainingHistory | None:
    """Gives back the artifact's training history, or None for an artifact saved without one."""
    data = artifact.files.get(HISTORY_FILE)
    return None if data is None else parse_history(data, where=artifact.path / HISTORY_FILE)
