"""Prometheus metrics: the series behind GET /metrics.

    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir)
    metrics.observe_request("/predict", "POST", 200, seconds)   # service/http/asgi.py, every request
    metrics.render(predictor.drift)        # the text exposition format

    bnserve_requests_total{route, method, status}   route is the template ("/predict"), never the raw path
    bnserve_request_duration_seconds{route, method} histogram, until the response is sent
    bnserve_predict_rows                            histogram: rows per /predict request
    bnserve_batch_rows                              histogram: rows per forward pass (the micro-batch size)
    bnserve_model_info{model, artifact_sha256, bn_fingerprint}  1
    bnserve_drift_score{layer}                      the drift score of each BN layer and of layer="input"
    bnserve_drift_score_overall                     the worst of them
    bnserve_drift_alert                             1 while the verdict is drift
    bnserve_drift_window_rows                       (effective) rows in the drift window
    bnserve_drift_verdict{verdict}                  1 for the current verdict: ok, drift, insufficient_data,
                                                    error, disabled

The drift series are computed from the monitor when /metrics is scraped. A score is 0 while the window is
empty; read it with the verdict, which then says insufficient_data.

Several worker processes: set PROMETHEUS_MULTIPROC_DIR (an empty directory, shared, set in the environment
before the workers start: prometheus-client reads it at import). Each worker then writes its series to
files there and /metrics, answered by any worker, merges them: counters and histograms are summed over
every worker that ever ran. Each worker has its own drift window (the rows it served) and publishes its
drift series every DRIFT_REFRESH_S seconds and when it answers a scrape; the merge takes, over the live
workers, the maximum score and alert (the worst window), the sum of window rows, and for each verdict
whether any worker holds it. GET /drift and POST /drift/reset act on the one worker that answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from models import Artifact
from service.monitoring.drift import DriftMonitor

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = tuple(float(2**k) for k in range(14))  # 1 ... 8192
VERDICTS = ("ok", "drift", "insufficient_data", "error", "disabled")
DRIFT_REFRESH_S = 5.0  # multiprocess mode: how often each worker publishes its drift series


class MetricsError(RuntimeError):
    """The metrics cannot run as configured."""


class Metrics:
    """Every series bnserve publishes, in a registry of its own (tests build many apps in one process)."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        if multiprocess_dir is not None:
            _check_multiprocess(multiprocess_dir)
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bnserve_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "bnserve_request_duration_seconds",
            "time from the request's arrival to its response sent, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_rows = Histogram(
            "bnserve_predict_rows", "rows per /predict request", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "bnserve_batch_rows", "rows per forward pass (micro-batch size)", buckets=ROW_BUCKETS, registry=r
        )
        self.model_info = Gauge(
            "bnserve_model_info",
            "the model served: 1 for its name, artifact SHA-256 and BN fingerprint",
            ["model", "artifact_sha256", "bn_fingerprint"],
            registry=r,
            multiprocess_mode="max",
        )
        self.drift_score = Gauge(
            "bnserve_drift_score",
            "drift score per BN layer and for layer=input (training standard deviations, see GET /drift)",
            ["layer"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_overall = Gauge(
            "bnserve_drift_score_overall", "the worst drift score of the layers and the input", registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.drift_alert = Gauge(
            "bnserve_drift_alert",
            "1 while the drift verdict is drift",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_rows = Gauge(
            "bnserve_drift_window_rows",
            "(effective) rows in the drift window",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.drift_verdict = Gauge(
            "bnserve_drift_verdict", "1 for the current drift verdict", ["verdict"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self._request_series.get((route, method, status))
        if series is None:  # labels() takes a lock and builds a key; do it once per combination
            series = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._request_series[(route, method, status)] = series
        series[0].inc()
        series[1].observe(seconds)

    def set_model(self, artifact: Artifact) -> None:
        self.model_info.labels(artifact.manifest.name, artifact.weights_sha256, artifact.bn_fingerprint).set(
            1
        )

    def refresh_drift(self, drift: DriftMonitor | None) -> None:
        """Publishes the monitor's current numbers (or the verdict disabled)."""
        if drift is None:
            verdict = "disabled"
        else:
            scores = drift.scores()
            for site in drift.sites:
                self.drift_score.labels(site.name).set(scores["sites"].get(site.name, 0.0))
            self.drift_overall.set(scores["score"] or 0.0)
            self.drift_rows.set(scores["rows"])
            verdict = scores["verdict"]
        self.drift_alert.set(1.0 if verdict == "drift" else 0.0)
        for v in VERDICTS:
            self.drift_verdict.labels(v).set(1.0 if v == verdict else 0.0)

    def render(self, drift: DriftMonitor | None) -> bytes:
        """Gives back every series in the text format (all workers' in multiprocess mode)."""
        self.refresh_drift(drift)
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=str(self.multiprocess_dir))
        return generate_latest(merged)

    def close(self) -> None:
        """Multiprocess mode: drops this worker's live gauges, so the merge forgets its drift window."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))


def _check_multiprocess(path: Path) -> None:
    if values.ValueClass is values.MutexValue:
        raise MetricsError(
            f"PROMETHEUS_MULTIPROC_DIR={path} is set for bnserve but prometheus-client was imported "
            "without it, so the workers would not write their metrics there; set it in the environment "
            "before starting"
        )
    if not path.is_dir():
        raise MetricsError(
            f"PROMETHEUS_MULTIPROC_DIR={path} is not a directory; create it (empty) before starting "
            "the workers"
        )
