"""The predictor: owns the verified artifact and answers predictions with the frozen statistics.

predictor = Predictor(settings, monitor=drift_monitor_for(settings), on_batch=..., on_predict_rows=...)
predictor = Predictor(settings, artifact_dir=Path("repo/wine/2"), model="wine", version="2")  # a repository's
predictor.load()                  # verify, freeze, fold BN, self-test; then ready
predictor.ready                   # True once loaded; else predictor.error says why
out = await predictor.predict(rows)   # rows: float32 (B, F) -> probabilities (B, K) or values (B, 1)
out, logits = await predictor.predict_outputs(rows)   # the same, and a classifier's logits (B, K)
predictor.answers.encode(out)     # the /predict answer as JSON (service/inference/answers.py)

Its collaborators come in at construction: ``monitor`` builds the drift monitor of the loaded artifact,
``on_batch`` sees the row count of every forward pass, ``on_predict_rows`` that of every request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import Artifact, ArtifactError, load_artifact
from models.bn import batchnorm_layers, fold_batchnorm, model_bn_fingerprint, training_bn_layers
from models.device import pick_device
from models.layers import Rescale
from service.errors import NotReady
from service.inference.answers import AnswerEncoder
from service.inference.batching import MicroBatcher
from service.inference.runtime import TorchRuntime
from service.inference.tuning import full_float32_on_cuda, keep_freed_memory
from service.monitoring.drift import DriftMonitor, MonitorFactory
from service.settings import Settings

log = logging.getLogger("bnserve")

FOLD_TOLERANCE = 1e-5


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
        self.artifact: Artifact | None = None
        self.serving_model: nn.Module | None = None  # the network the runtime runs (BN folded by default)
        self.runtime: TorchRuntime | None = None
        self.batcher: MicroBatcher | None = None
        self.answers: AnswerEncoder | None = None
        self.drift: DriftMonitor | None = None
        self.device = torch.device("cpu")
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
        torch.set_num_threads(self.settings.torch_threads)
        self.device = pick_device(self.settings.device)
        if self.device.type == "cuda":
            full_float32_on_cuda()
        artifact = load_artifact(self.artifact_dir, device=self.device)
        model = artifact.model
        if still_training := training_bn_layers(model):
            raise RuntimeError(f"BN layers {still_training} are in training mode")
        if model_bn_fingerprint(model) != artifact.bn_fingerprint:
            raise RuntimeError("the BN fingerprint of the loaded network differs from the manifest's")
        serving = model
        if self.settings.fold_bn:
            serving = fold_batchnorm(model)
            self.fold_max_abs_diff = _max_abs_diff(model, serving, artifact, self.device)
            if not self.fold_max_abs_diff <= FOLD_TOLERANCE:
                raise RuntimeError(
                    f"the folded network differs from the unfolded one by {self.fold_max_abs_diff:.3g} on the "
                    f"canary inputs (tolerance {FOLD_TOLERANCE}); set BNSERVE_FOLD_BN=false to serve unfolded"
                )
        m = artifact.manifest
        drift = self._monitor(artifact) if self._monitor is not None else None
        self.runtime = TorchRuntime(
            serving,
            task=m.task,
            device=self.device,
            torch_threads=self.settings.torch_threads,
            observed=[name for name, _ in batchnorm_layers(model)],
            observer=drift,
            keep_logits=m.task == "classification",
        )
        self.num_classes = m.num_outputs if m.task == "classification" else None
        self.batcher = MicroBatcher(
            self.runtime.forward,
            max_batch_rows=self.settings.max_batch_rows,
            max_wait_ms=self.settings.max_wait_ms,
            on_batch=self._on_batch,
        )
        self.model = self.model or m.name
        self.answers = AnswerEncoder(
            model=self.model,
            version=self.version,
            artifact_sha256=artifact.weights_sha256,
            class_labels=m.class_labels,
        )
        self.artifact, self.serving_model, self.drift = artifact, serving, drift

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    @property
    def artifact_sha256(self) -> str:
        return self.require_ready().weights_sha256

    def require_ready(self) -> Artifact:
        """Gives back the loaded artifact; raises NotReady (503) when there is none."""
        if self.artifact is None or self.error is not None:
            raise NotReady(f"model not ready: {self.error}")
        return self.artifact

    @property
    def feature_names(self) -> list[str]:
        return self.require_ready().manifest.feature_names

    async def predict(self, rows: np.ndarray) -> np.ndarray:
        """Gives back the batch output for ``rows`` (B, F): class probabilities (B, K) or values (B, 1)."""
        return (await self.predict_outputs(rows))[0]

    async def predict_outputs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Gives back (probabilities (B, K) or values (B, 1), a classifier's logits (B, K) or None) for
        ``rows`` (B, F), from the same forward pass as every other request merged with them."""
        self.require_ready()
        assert self.batcher is not None
        if self._on_predict_rows is not None:
            self._on_predict_rows(len(rows))
        out = await self.batcher.submit(rows)
        k = self.num_classes
        return (out, None) if k is None else (out[:, :k], out[:, k:])


def _max_abs_diff(model: nn.Module, folded: nn.Module, artifact: Artifact, device: torch.device) -> float:
    """Gives back the largest difference between the two networks' outputs on the canary inputs, in the
    network's own units: before a final ``Rescale`` (regression), whose multiplication by the target's
    standard deviation would scale float32 rounding along with it."""
    x = torch.tensor(artifact.manifest.canary.inputs, dtype=torch.float32, device=device)
    last = list(model.children())[-1]
    scale = last.scale if isinstance(last, Rescale) else 1.0
    with torch.inference_mode():
        return float(((model(x) - folded(x)) / scale).abs().max())
