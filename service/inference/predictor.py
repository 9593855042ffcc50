"""The predictor: owns the verified artifact and answers predictions with the frozen statistics.

predictor = Predictor(settings, monitor=drift_monitor_for(settings), on_batch=..., on_predict_rows=...)
predictor = Predictor(settings, artifact_dir=Path("repo/wine/2"), model="wine", version="2")  # a repository's
predictor.load()                  # verify, freeze, fold BN, self-test; then ready
predictor.ready                   # True once loaded; else predictor.error says why
out = await predictor.predict(rows)   # rows: float32 (B, F) -> probabilities (B, K) or values (B, 1)
out, logits = await predictor.predict_outputs(rows)   # the same, and a classifier's logits (B, K)
predictor.enqueue(rows, waiter)   # the same, without awaiting: waiter.set_result(batch rows); see outputs()
predictor.answers.encode(out)     # the /predict answer as JSON (service/inference/answers.py)

Its collaborators come in at construction: ``monitor`` builds the drift monitor of the loaded artifact,
``on_batch`` sees the row count of every forward pass, ``on_predict_rows`` that of every request.

``settings.runtime`` picks what computes the network: ``torch`` (service/inference/runtime.py) or ``lean``
(service/inference/lean.py, numpy, never imports torch); this module imports neither until ``load``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np

from models.errors import ArtifactError
from models.preprocessing import Encoder
from models.reader import VerifiedArtifact
from service.errors import NotReady
from service.inference.answers import AnswerEncoder
from service.inference.batching import MicroBatcher, Waiter
from service.inference.inputs import TableRows
from service.inference.loaded import Forward, Loaded
from service.inference.tuning import keep_freed_memory
from service.monitoring.drift import DriftMonitor, MonitorFactory
from service.monitoring.drift.features import FeatureDrift
from service.settings import Settings

log = logging.getLogger("bnserve")
W = TypeVar("W", bound=Waiter)


class Predictor:
    def __init__(
        self,
        settings: Settings,
        *,
        artifact_dir: Path | None = None,
        model: str | None = None,
        version: str = "1",
        monitor: MonitorFactory | None = None,
        on_batch: Callable[[int], None] | None = None,
        on_predict_rows: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.artifact_dir = artifact_dir if artifact_dir is not None else settings.model_dir
        self.model = model  # the name it is served under (default: the manifest's name)
        self.version = version
        self.error: str | None = "not loaded yet"
        self.artifact: VerifiedArtifact | None = None
        self.serving_model: Any = None  # the torch runtime's network (BN folded by default); None on lean
        self.runtime: Forward | None = None  # TorchRuntime or LeanRuntime
        self.batcher: MicroBatcher | None = None
        self.answers: AnswerEncoder | None = None
        self.drift: DriftMonitor | None = None
        self.feature_drift: FeatureDrift | None = None  # categories and missing rates, with preprocessing
        self.device = "cpu"  # where the forwards run
        self.fold_max_abs_diff: float | None = None
        self.num_classes: int | None = None  # a classifier's K: its forward gives probabilities then logits
        self.load_seconds: float | None = None
        self._monitor = monitor
        self._on_batch = on_batch
        self._on_predict_rows = on_predict_rows

    @property
    def ready(self) -> bool:
        return self.error is None

    def load(self) -> None:
        """Loads, verifies and freezes the artifact; on failure ``ready`` stays False and ``error`` says why."""
        start = time.perf_counter()
        try:
            self._load()
        except (ArtifactError, OSError, RuntimeError, ValueError) as e:
            self.error = f"artifact refused: {e}"
            log.error("bnserve is NOT ready: %s", self.error)
            return
        self.error = None
        self.load_seconds = time.perf_counter() - start

    def _load(self) -> None:
        keep_freed_memory()
        if self.settings.runtime == "lean":
            from service.inference.lean import load_lean as load
        else:
            from service.inference.runtime import load_torch as load
        loaded: Loaded = load(self.settings, self._monitor, Path(self.artifact_dir))
        self.batcher = MicroBatcher(
            loaded.runtime.forward,
            max_batch_rows=self.settings.max_batch_rows,
            max_wait_ms=self.settings.max_wait_ms,
            inline_ms=self.settings.inline_budget_ms,
            on_batch=self._on_batch,
        )
        m = loaded.artifact.manifest
        self.model = self.model or m.name
        self.answers = AnswerEncoder(
            model=self.model,
            version=self.version,
            artifact_sha256=loaded.artifact.weights_sha256,
            class_labels=m.class_labels,
        )
        self.runtime, self.device, self.fold_max_abs_diff = (
            loaded.runtime,
            loaded.device,
            loaded.fold_max_abs_diff,
        )
        self.artifact, self.serving_model, self.drift = loaded.artifact, loaded.serving_model, loaded.drift
        # Both runtimes give a classifier's probabilities then its logits (keep_logits): split per request.
        self.num_classes = m.num_outputs if m.task == "classification" else None
        if loaded.drift is not None and m.preprocessing is not None:
            s = self.settings
            self.feature_drift = FeatureDrift(
                m.feature_names, m.preprocessing, rows=s.drift_window, min_rows=s.drift_min_rows
            )

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    @property
    def artifact_sha256(self) -> str:
        return self.require_ready().weights_sha256

    def require_ready(self) -> VerifiedArtifact:
        """Gives back the loaded artifact; raises NotReady (503) when there is none."""
        if self.artifact is None or self.error is not None:
            raise NotReady(f"model not ready: {self.error}")
        return self.artifact

    @property
    def feature_names(self) -> list[str]:
        return self.require_ready().manifest.feature_names

    @property
    def encoder(self) -> Encoder | None:
        """The artifact's preprocessing, raw table rows -> the network's input; None: rows go in as sent."""
        return self.require_ready().encoder

    async def predict(self, rows: np.ndarray | TableRows) -> np.ndarray:
        """Gives back the batch output for ``rows`` (B, F), or encoded table rows: class probabilities (B, K)
        or values (B, 1)."""
        return self.outputs(await self.enqueue(rows))[0]

    async def predict_outputs(self, rows: np.ndarray | TableRows) -> tuple[np.ndarray, np.ndarray | None]:
        """Gives back (probabilities (B, K) or values (B, 1), a classifier's logits (B, K) or None) for
        ``rows`` (B, F) or encoded table rows, from the same forward pass as every other request merged
        with them."""
        return self.outputs(await self.enqueue(rows))

    def outputs(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Gives back (probabilities (B, K) or values (B, 1), a classifier's logits (B, K) or None) of a batch
        output's rows, as ``enqueue``'s waiter gets them."""
        k = self.num_classes
        return (out, None) if k is None else (out[:, :k], out[:, k:])

    @overload
    def enqueue(self, rows: np.ndarray | TableRows) -> asyncio.Future[np.ndarray]: ...
    @overload
    def enqueue(self, rows: np.ndarray | TableRows, waiter: W) -> W: ...

    def enqueue(self, rows: np.ndarray | TableRows, waiter: Waiter | None = None) -> Waiter:
        """Counts ``rows``, shows a table's raw columns to its drift monitor, and queues the network's input
        for the next batch; gives back ``waiter`` (by default a new future), which gets the batch output's
        rows (a classifier's probabilities then logits, as the runtimes give them: see ``outputs``)."""
        self.require_ready()
        assert self.batcher is not None
        if self._on_predict_rows is not None:
            self._on_predict_rows(len(rows))
        if isinstance(rows, TableRows):
            if self.feature_drift is not None:
                self.feature_drift.add(rows.numbers, rows.codes)
            rows = rows.x
        return self.batcher.enqueue(rows) if waiter is None else self.batcher.enqueue(rows, waiter)
