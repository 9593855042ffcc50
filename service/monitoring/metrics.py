"""Prometheus metrics: the series behind GET /metrics.

    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir)
    metrics.observe_request("/predict", "POST", 200, seconds)   # service/http/asgi.py, every request
    metrics.render({("wine", "2"): predictor.drift})   # the text exposition format, per serving version

    bnserve_requests_total{route, method, status}   route is the template ("/predict"), never the raw path
    bnserve_request_duration_seconds{route, method} histogram, until the response is sent
    bnserve_predict_rows{model, version}            histogram: rows per prediction request (/predict, OIP infer)
    bnserve_batch_rows{model, version}              histogram: rows per forward pass (the micro-batch size)
    bnserve_model_info{model, version, artifact_sha256, bn_fingerprint}  1 while serving, 0 once unloaded
    bnserve_drift_score{model, version, layer}      the drift score of each BN layer and of layer="input"
    bnserve_drift_score_overall{model, version}     the worst of them
    bnserve_drift_alert{model, version}             1 while the verdict is drift
    bnserve_drift_window_rows{model, version}       (effective) rows in the drift window
    bnserve_drift_verdict{model, version, verdict}  1 for the current verdict: ok, drift, insufficient_data,
                                                    error, disabled

Every version of a model has its own drift window (a new version starts a new one) and its own series.

With one process, the request-path series (requests, request duration, predict rows, batch rows) are
tallied by the event loop's thread in plain numbers (``Tally``, ``Count``) and added into prometheus-client's
series each time /metrics is rendered: the same exposition, without prometheus-client's locks and Python
bucket walk on every request. Observe them from the event loop's thread only.

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

import bisect
import contextlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from models.reader import VerifiedArtifact
from service.monitoring.drift import DriftMonitor
from service.monitoring.drift.features import FeatureDrift

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = tuple(float(2**k) for k in range(14))  # 1 ... 8192
VERDICTS = ("ok", "drift", "insufficient_data", "error", "disabled")
DRIFT_REFRESH_S = 5.0  # multiprocess mode: how often each worker publishes its drift series


VERSION = ("model", "version")


class VersionSeries(NamedTuple):
    predict_rows: Any  # each has .observe(value): a Tally, or prometheus-client's labelled Histogram child
    batch_rows: Any


class Tally:
    """The observations of one labelled histogram, kept as plain numbers by the one thread that serves (the
    event loop) and added into prometheus-client's series when /metrics is rendered (``publish``).

    prometheus-client's ``observe`` takes a lock per bucket and sum, and walks the buckets in Python: with
    three to four observations per one-row request it was about 9% of a lean server's requests/s at c16
    (docs/PERFORMANCE.md). Here an observation is a ``bisect`` and two additions. Only one thread may
    ``observe``; ``publish`` may run on any thread (the counts only grow, and it adds what it has not added
    yet). prometheus-client has no public call that adds to a bucket, so ``publish`` uses the child's
    ``_buckets`` and ``_sum``, which every release since 0.4 has had.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sent_counts", "_sent_sum", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)  # ascending, +Inf last
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._sent_counts = [0] * len(self._bounds)
        self._sent_sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound is >= value, as prometheus-client's observe picks it.
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def publish(self) -> None:
        # A copy: observations that come while this runs wait for the next publish.
        counts, total = self._counts[:], self._sum
        for bucket, n, sent in zip(self._child._buckets, counts, self._sent_counts, strict=True):
            if n != sent:
                bucket.inc(n - sent)
        if total != self._sent_sum:
            self._child._sum.inc(total - self._sent_sum)
        self._sent_counts, self._sent_sum = counts, total


class Count:
    """A labelled counter's increments, kept like ``Tally``'s observations and added at ``publish``."""

    __slots__ = ("_child", "_n", "_sent")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._n = 0
        self._sent = 0

    def inc(self) -> None:
        self._n += 1

    def publish(self) -> None:
        n = self._n
        if n != self._sent:
            self._child.inc(n - self._sent)
            self._sent = n


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
            "bnserve_predict_rows", "rows per prediction request (/predict and OIP infer)", VERSION,
            buckets=ROW_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "bnserve_batch_rows", "rows per forward pass (micro-batch size)", VERSION, buckets=ROW_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "bnserve_model_info",
            "each model version loaded: 1 while it serves (0 once unloaded), with its artifact SHA-256 and BN "
            "fingerprint",
            [*VERSION, "artifact_sha256", "bn_fingerprint"],
            registry=r,
            multiprocess_mode="max",
        )
        self.drift_score = Gauge(
            "bnserve_drift_score",
            "drift score per BN layer and for layer=input (training standard deviations, see GET /drift)",
            [*VERSION, "layer"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_overall = Gauge(
            "bnserve_drift_score_overall", "the worst drift score of the layers and the input", VERSION,
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.drift_alert = Gauge(
            "bnserve_drift_alert",
            "1 while the drift verdict is drift",
            VERSION,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_rows = Gauge(
            "bnserve_drift_window_rows",
            "(effective) rows in the drift window",
            VERSION,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.feature_psi = Gauge(
            "bnserve_feature_psi",
            "population stability index of a categorical or boolean feature's frequencies vs training",
            [*VERSION, "feature"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.feature_missing_rate = Gauge(
            "bnserve_feature_missing_rate",
            "share of the drift window's rows where the feature was missing",
            [*VERSION, "feature"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_verdict = Gauge(
            "bnserve_drift_verdict", "1 for the current drift verdict", [*VERSION, "verdict"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # One process: the request-path series are tallied locally and published at each render. Several
        # workers: each observation goes straight to prometheus-client, which writes it to the shared files
        # that any worker's /metrics merges.
        self._local = multiprocess_dir is None
        self._pending: list[Tally | Count] = []  # every local series, published at render
        self._latency_tallies: dict[tuple[str, str], Tally] = {}
        self._publish_lock = threading.Lock()
        self._info: dict[tuple[str, ...], float] = {}  # model_info label values -> 1 serving, 0 unloaded
        self._drift_sites: dict[tuple[str, str], list[str]] = {}  # published drift series: version -> sites
        self._feature_series: dict[tuple[str, str], set[tuple[str, str]]] = {}  # version -> (gauge, feature)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Counts and times one HTTP request; call it from the event loop's thread only."""
        series = self._request_series.get((route, method, status))
        if series is None:  # labels() takes a lock and builds a key; do it once per combination
            series = self._new_request_series(route, method, status)
        series[0].inc()
        series[1].observe(seconds)

    def _new_request_series(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        counter, latency = (
            self.requests.labels(route, method, str(status)),
            self.latency.labels(route, method),
        )
        series: tuple[Any, Any] = (counter, latency)
        if self._local:
            count = Count(counter)
            tally = self._latency_tallies.get((route, method))
            if tally is None:
                tally = self._latency_tallies[route, method] = self._tally(latency)
            self._pending.append(count)
            series = (count, tally)
        self._request_series[route, method, status] = series
        return series

    def _tally(self, child: Any) -> Tally:
        tally = Tally(child)
        self._pending.append(tally)
        return tally

    def for_version(self, model: str, version: str) -> VersionSeries:
        """Gives back the row histograms of one model version; observe them from the event loop's thread."""
        predict_rows, batch_rows = (
            self.predict_rows.labels(model, version),
            self.batch_rows.labels(model, version),
        )
        if self._local:
            return VersionSeries(self._tally(predict_rows), self._tally(batch_rows))
        return VersionSeries(predict_rows, batch_rows)

    def publish(self) -> None:
        """Adds the locally tallied observations into prometheus-client's series (``render`` calls it)."""
        with self._publish_lock:
            for series in list(self._pending):  # a copy: the loop may add a series meanwhile
                series.publish()

    def set_model(self, artifact: VerifiedArtifact, *, model: str | None = None, version: str = "1") -> None:
        """Marks a version as serving (``model`` defaults to the manifest's name)."""
        labels = (model or artifact.manifest.name, version, artifact.weights_sha256, artifact.bn_fingerprint)
        self._info[labels] = 1.0
        self.model_info.labels(*labels).set(1)

    def set_serving(self, serving: set[tuple[str, str]]) -> None:
        """Sets model_info to 0 for the versions not in ``serving`` (model, version): they were unloaded."""
        for labels, was in list(self._info.items()):
            now = 1.0 if (labels[0], labels[1]) in serving else 0.0
            if now != was:
                self._info[labels] = now
                self.model_info.labels(*labels).set(now)

    def refresh_drift(
        self,
        monitors: Mapping[tuple[str, str], DriftMonitor | None],
        features: Mapping[tuple[str, str], FeatureDrift | None] | None = None,
    ) -> None:
        """Publishes each serving version's monitor's current numbers (or the verdict disabled) and its
        per-feature numbers (a table artifact's), and drops the series of versions no longer serving."""
        for key in (set(self._drift_sites) | set(self._feature_series)) - set(monitors):
            self._forget_drift(*key)
        for (model, version), feature_drift in (features or {}).items():
            if feature_drift is None:
                continue
            names = self._feature_series.setdefault((model, version), set())
            for f in feature_drift.report()["features"]:
                self.feature_missing_rate.labels(model, version, f["name"]).set(f["missing_rate"] or 0.0)
                names.add(("missing", f["name"]))
                if f["psi"] is not None or f["kind"] != "numeric":
                    self.feature_psi.labels(model, version, f["name"]).set(f["psi"] or 0.0)
                    names.add(("psi", f["name"]))
        for (model, version), drift in monitors.items():
            self._drift_sites[model, version] = [s.name for s in drift.sites] if drift is not None else []
            if drift is None:
                verdict = "disabled"
            else:
                scores = drift.scores()
                for site in drift.sites:
                    self.drift_score.labels(model, version, site.name).set(
                        scores["sites"].get(site.name, 0.0)
                    )
                self.drift_overall.labels(model, version).set(scores["score"] or 0.0)
                self.drift_rows.labels(model, version).set(scores["rows"])
                verdict = scores["verdict"]
            self.drift_alert.labels(model, version).set(1.0 if verdict == "drift" else 0.0)
            for v in VERDICTS:
                self.drift_verdict.labels(model, version, v).set(1.0 if v == verdict else 0.0)

    def _forget_drift(self, model: str, version: str) -> None:
        for gauge in (self.drift_overall, self.drift_alert, self.drift_rows):
            with contextlib.suppress(KeyError):
                gauge.remove(model, version)
        for gauge_name, feature in self._feature_series.pop((model, version), set()):
            gauge = self.feature_psi if gauge_name == "psi" else self.feature_missing_rate
            with contextlib.suppress(KeyError):
                gauge.remove(model, version, feature)
        for v in VERDICTS:
            with contextlib.suppress(KeyError):
                self.drift_verdict.remove(model, version, v)
        for site in self._drift_sites.pop((model, version), []):
            with contextlib.suppress(KeyError):
                self.drift_score.remove(model, version, site)

    def render(
        self,
        monitors: Mapping[tuple[str, str], DriftMonitor | None],
        features: Mapping[tuple[str, str], FeatureDrift | None] | None = None,
    ) -> bytes:
        """Gives back every series in the text format (all workers' in multiprocess mode)."""
        self.refresh_drift(monitors, features)
        if self.multiprocess_dir is None:
            self.publish()
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
