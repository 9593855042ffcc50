"""DriftMonitor: live traffic at the input and every BN layer, in a window, against the frozen statistics.

    monitor = DriftMonitor.for_artifact(artifact, RowWindow(2048), min_rows=200, threshold=1.5)
    batch = monitor.begin(x)         # inside the forward (TorchRuntime): see(name, h) per BN slot, end()
    monitor.report()                 # the GET /drift answer
    monitor.reset()                  # POST /drift/reset: a new window

The monitor copies the frozen statistics once and only reads the network: the BN fingerprint never moves.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.reader import VerifiedArtifact
from service.monitoring.drift.capture import Array, Batch, Capture, IgnoredBatch
from service.monitoring.drift.report import Verdict, report, verdict_of
from service.monitoring.drift.sites import INPUT, Site, sites_of
from service.monitoring.drift.stats import Layout, SiteDrift
from service.monitoring.drift.windows import MOMENTS, Window, make_window
from service.settings import Settings


class DriftMonitor:
    """Streams live traffic at every site into a window (``Capture``) and compares it with the frozen
    statistics (``SiteDrift``) when read."""

    def __init__(self, sites: list[Site], window: Window, *, min_rows: int, threshold: float) -> None:
        if sites[0].kind != INPUT:
            raise ValueError("the first site must be the input features")
        self.sites = sites
        self.window = window
        self.min_rows = min_rows
        self.threshold = threshold
        self.capture = Capture(Layout.of(sites), window)
        self.since = _now()

    @classmethod
    def for_artifact(
        cls, artifact: VerifiedArtifact, window: Window, *, min_rows: int, threshold: float
    ) -> DriftMonitor:
        """Gives back a monitor of the artifact's input and every BN layer, read from the unfolded network
        (a torch ``Artifact`` or a ``LeanArtifact``)."""
        model = getattr(artifact, "model", None)  # a torch network; the numpy one never writes in place
        if model is not None and (
            inplace := [name for name, m in model.named_modules() if getattr(m, "inplace", False)]
        ):
            # The monitor keeps activations by reference; an in-place layer would overwrite them.
            raise ValueError(f"the drift monitor needs a network without in-place layers, got {inplace}")
        return cls(sites_of(artifact), window, min_rows=min_rows, threshold=threshold)

    def begin(self, x: Array) -> Batch | IgnoredBatch:
        """Starts watching one serving batch: its raw input rows ``x`` (B, F), numpy or torch."""
        return self.capture.begin(x)

    @property
    def error(self) -> str | None:
        """Why the monitor stopped; None while it runs."""
        return self.capture.error

    @property
    def rows_seen(self) -> int:
        """Rows the monitor took in since the last reset, staged ones included."""
        return self.capture.rows_seen

    def reset(self) -> None:
        """Starts a new window (and restarts a monitor stopped by an error)."""
        self.capture.reset()
        self.since = _now()

    def compare(self) -> tuple[float, list[SiteDrift]]:
        """Gives back the window's effective row count and every site's comparison (none without rows)."""
        snap = self.capture.snapshot()
        if snap.weight <= 0:
            return 0.0, []
        layout = self.capture.layout
        sums = (
            self.capture.moment_sums(snap.raw, snap.weights)
            if len(snap.raw)
            else np.zeros((MOMENTS, layout.num_channels))
        )
        if snap.sums is not None:
            sums += snap.sums
        return snap.rows, [
            SiteDrift.compare(s, snap.weight, snap.rows, sums[:, layout.columns[s.name]]) for s in self.sites
        ]

    def verdict(self, rows: float, score: float | None) -> Verdict:
        return verdict_of(rows, score, min_rows=self.min_rows, threshold=self.threshold, error=self.error)

    def report(self, *, top: int = 5, features: bool = True) -> dict[str, Any]:
        """Gives back the GET /drift answer: the verdict, then the input and every BN layer."""
        rows, drifts = self.compare()
        score = max(d.worst for d in drifts) if drifts else None
        head = {
            "threshold": self.threshold,
            "min_rows": self.min_rows,
            "rows_seen": self.rows_seen,
            "window": self.window.describe(),
            "since": self.since,
        }
        return report(
            rows, drifts, verdict=self.verdict(rows, score), head=head, top=top, features=features,
            error=self.error,
        )  # fmt: skip

    def scores(self) -> dict[str, Any]:
        """Gives back the numbers the metrics publish: score per site and overall, verdict, window rows."""
        rows, drifts = self.compare()
        per_site = {d.site.name: d.worst for d in drifts}
        score = max(per_site.values()) if per_site else None
        return {"rows": rows, "sites": per_site, "score": score, "verdict": self.verdict(rows, score)}


MonitorFactory = Callable[[VerifiedArtifact], DriftMonitor]


def drift_monitor_for(settings: Settings) -> MonitorFactory | None:
    """Gives back what builds the monitor of a loaded artifact as ``settings`` configure it (None: off)."""
    if not settings.drift_enabled:
        return None

    def build(artifact: VerifiedArtifact) -> DriftMonitor:
        s = settings
        window = make_window(s.drift_window_mode, rows=s.drift_window, half_life=s.drift_decay)
        return DriftMonitor.for_artifact(
            artifact, window, min_rows=s.drift_min_rows, threshold=s.drift_threshold
        )

    return build


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
