"""The lean runtime: the verified artifact computed with numpy on the CPU; nothing here imports torch.

    loaded = load_lean(settings, monitor)     # BNSERVE_RUNTIME=lean
    out = loaded.runtime.forward(rows)        # numpy float32 (B, F) -> (B, K) probabilities or (B, 1) values

The network is ``models.numpy_net``'s (BN folded as ``torch.nn.utils.fusion`` folds it, unless
BNSERVE_FOLD_BN=false), verified by ``models.lean.load_lean_artifact`` with every check ``load_artifact``
makes. Its answers equal the torch runtime's within 1e-5 (tests/service/inference/test_lean_runtime.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from models.lean import fold, load_lean_artifact
from models.numpy_net import Network, softmax
from service.inference.loaded import FOLD_TOLERANCE, Loaded, fold_refused
from service.inference.tuning import use_blas_threads
from service.monitoring.drift import DriftMonitor, MonitorFactory
from service.settings import Settings


class LeanRuntime:
    """Runs the numpy network, showing every BN slot's output to the drift monitor when there is one."""

    def __init__(
        self,
        network: Network,
        *,
        task: Literal["classification", "regression"],
        observer: DriftMonitor | None = None,
        keep_logits: bool = False,
    ) -> None:
        self.network = network
        self.observer = observer
        self._softmax = task == "classification"
        self._keep_logits = keep_logits and self._softmax

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Gives back class probabilities (B, K), with ``keep_logits`` followed by the logits they are the
        softmax of (B, 2K), as ``TorchRuntime`` does, or regression values (B, 1), for raw rows (B, F)."""
        if self.observer is None:
            out = self.network(x)
        else:
            batch = self.observer.begin(x)
            out = self.network.forward(x, see=batch.see)
            batch.end()
        if self._keep_logits:
            return np.concatenate((softmax(out), out), axis=1)
        return softmax(out) if self._softmax else out


def load_lean(settings: Settings, monitor: MonitorFactory | None, artifact_dir: Path) -> Loaded:
    """Gives back the artifact at ``artifact_dir`` verified and folded, served by numpy."""
    if settings.device == "cuda":
        raise RuntimeError(
            "BNSERVE_RUNTIME=lean computes on the CPU; for BNSERVE_DEVICE=cuda use BNSERVE_RUNTIME=torch"
        )
    use_blas_threads(settings.torch_threads)
    artifact = load_lean_artifact(artifact_dir)
    network, diff = artifact.network, None
    if settings.fold_bn:
        network, diff = fold(artifact)
        if not diff <= FOLD_TOLERANCE:
            raise RuntimeError(fold_refused(diff))
    drift = monitor(artifact) if monitor is not None else None
    task = artifact.manifest.task
    runtime = LeanRuntime(network, task=task, observer=drift, keep_logits=task == "classification")
    return Loaded(artifact, runtime, "cpu", diff, drift)
