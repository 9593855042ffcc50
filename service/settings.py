"""Service settings: one pydantic-settings class, read from ``BNSERVE_*`` environment variables.

BNSERVE_MODEL_DIR=artifacts/wine BNSERVE_PORT=9000 python -m service
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BNSERVE_", extra="ignore")

    model_dir: Path = Field(Path("artifacts/breast_cancer"), description="artifact directory to serve")
    repository: Path | None = Field(
        None,
        description="model repository <dir>/<model>/<version>/ to serve instead of model_dir (docs/REPOSITORY.md)",
    )
    default_model: str | None = Field(
        None, description="the model a request naming none gets (default: the only, else the first by name)"
    )
    repository_poll_s: float | None = Field(
        None,
        gt=0,
        description="rescan the repository this often (seconds) and apply what changed; off when unset",
    )
    repository_state_dir: Path | None = Field(
        None,
        description="a directory the workers share so load/unload requests reach them all (python -m service "
        "makes one when it starts several workers)",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="bearer token for what changes server state (load, unload, index, drift reset); unset: "
        "those endpoints answer 403",
    )
    read_token: SecretStr | None = Field(
        None, description="bearer token for inference and read-only endpoints too; unset: they are open"
    )
    model_name: str | None = Field(
        None,
        min_length=1,
        pattern=r"^[^/]+$",
        description="the name /v2/models/NAME serves the model under (Open Inference Protocol); unset: the "
        "artifact's manifest name. KServe's runtime sets it to the InferenceService's name",
    )
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="port to bind")
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level"
    )
    access_log: bool = Field(False, description="log every request (costs throughput)")
    http_fast_path: bool = Field(
        True,
        description="answer POST /predict and inference requests straight from the HTTP parser, without an "
        "ASGI cycle (service/http/protocol.py); off: every request goes through uvicorn's ASGI path",
    )
    max_rows: int = Field(4096, ge=1, description="most rows one /predict request may carry")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest accepted request body")
    runtime: Literal["torch", "lean"] = Field(
        "torch",
        description="what computes the network: torch (CPU or CUDA), or lean: numpy on the CPU, never "
        "imports torch (starts in a fraction of the time and memory; README)",
    )
    torch_threads: int = Field(
        1, ge=1, description="threads for the forward pass: torch's intra-op pool, or numpy's BLAS (lean)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when available, else CPU; the lean runtime computes on the CPU"
    )
    fold_bn: bool = Field(True, description="fold each BN into the preceding Linear/Conv for serving")
    max_batch_rows: int = Field(
        512, ge=1, description="micro-batching: most rows merged into one forward pass"
    )
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="micro-batching: how long the first queued request waits for others; 0 merges only "
        "the requests that arrived while the previous forward ran (no added latency when idle)",
    )
    inline_budget_ms: float = Field(
        5.0,
        ge=0,
        description="micro-batching: a batch of more than 64 rows runs on the event loop instead of the "
        "worker thread while no request of at most 64 rows came in during the last second and its forward "
        "is expected to take at most this long; 0: always the thread",
    )
    drift_enabled: bool = Field(
        True, description="watch live traffic at every BN layer and the input against the frozen statistics"
    )
    drift_window_mode: Literal["rows", "decay"] = Field(
        "rows",
        description="rows: the last drift_window rows exactly; decay: every row, halved every drift_decay rows",
    )
    drift_window: int = Field(
        2048, ge=1, description="rows mode: how many recent rows the drift window holds"
    )
    drift_decay: float = Field(
        1024.0, gt=0, description="decay mode: the half-life of a row's weight, in rows"
    )
    drift_min_rows: int = Field(
        200, ge=1, description="fewer rows in the window give the verdict insufficient_data, not 'no drift'"
    )
    drift_threshold: float = Field(
        1.5,
        gt=0,
        description="alert when the drift score exceeds this (training standard deviations; a collapsed "
        "spread alone scores at most 1, a 3-sigma shift about 3)",
    )
    prometheus_multiproc_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("prometheus_multiproc_dir", "PROMETHEUS_MULTIPROC_DIR"),
        description="PROMETHEUS_MULTIPROC_DIR (no BNSERVE_ prefix, prometheus-client reads it too): "
        "a directory shared by the worker processes; /metrics then adds up every worker",
    )
