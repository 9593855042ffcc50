"""What loading gives the predictor, whichever runtime loaded it (``BNSERVE_RUNTIME``).

    loaded = load_torch(settings, monitor)   # service/inference/runtime.py: torch, CPU or CUDA
    loaded = load_lean(settings, monitor)    # service/inference/lean.py: numpy, never imports torch

Both verify the artifact entirely (checksums, canaries, the fold check) before they give anything back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models.reader import VerifiedArtifact
from service.monitoring.drift import DriftMonitor

FOLD_TOLERANCE = (
    1e-5  # largest difference allowed between the folded and the unfolded network on the canaries
)


class Forward(Protocol):
    def forward(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class Loaded:
    """A verified artifact and the runtime that serves it."""

    artifact: VerifiedArtifact
    runtime: Forward  # raw rows (B, F) float32 -> probabilities (B, K) or values (B, 1)
    device: str  # where the forwards run: "cpu", "cuda:0"
    fold_max_abs_diff: float | None  # the fold check's measure; None when BN is served unfolded
    drift: DriftMonitor | None
    serving_model: Any = None  # the torch runtime's network (BN folded by default); None on the lean runtime


def fold_refused(diff: float) -> str:
    """Gives back why a folded network that differs by ``diff`` on the canaries is not served."""
    return (
        f"the folded network differs from the unfolded one by {diff:.3g} on the canary inputs (tolerance "
        f"{FOLD_TOLERANCE}); set BNSERVE_FOLD_BN=false to serve unfolded"
    )
