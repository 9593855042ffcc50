"""The request-path series are tallied locally and published at render: /metrics must show exactly what
prometheus-client's own observe and inc would have, once, however often it is rendered."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service.monitoring.metrics import LATENCY_BUCKETS, ROW_BUCKETS, Count, Metrics, Tally

# On bucket bounds (a value equal to a bound counts in that bucket), between them, below the first,
# beyond the last, zero and a negative.
VALUES = [0.0005, 0.001, 0.0007, 1e-9, 0.0, -1.0, 2.5, 10.0, 10.5, 1e9, 0.3, 0.25, 5.0, 0.004]


def _pair(buckets: tuple[float, ...]) -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["l"], buckets=buckets, registry=direct_registry)
    tallied = Histogram("h", "h", ["l"], buckets=buckets, registry=tallied_registry)
    return direct_registry, direct, tallied_registry, tallied


def _samples(registry: CollectorRegistry) -> list[str]:
    return [
        line for line in generate_latest(registry).decode().splitlines() if not line.startswith("h_created")
    ]


def test_a_tally_publishes_what_observe_would_have_once() -> None:
    for buckets, values in (
        (LATENCY_BUCKETS, VALUES),
        (ROW_BUCKETS, [1, 2, 3, 4, 5, 8, 9, 16, 1024, 8192, 9000]),
    ):
        direct_registry, direct, tallied_registry, tallied = _pair(buckets)
        tally = Tally(tallied.labels("x"))
        for v in values:
            direct.labels("x").observe(v)
            tally.observe(v)
        assert _samples(tallied_registry) != _samples(direct_registry)  # nothing shown before publish
        tally.publish()
        assert _samples(tallied_registry) == _samples(direct_registry)
        tally.publish()  # nothing new: nothing added twice
        assert _samples(tallied_registry) == _samples(direct_registry)
        for v in values[:3]:  # and what comes after a publish is added by the next
            direct.labels("x").observe(v)
            tally.observe(v)
        tally.publish()
        assert _samples(tallied_registry) == _samples(direct_registry)


def test_a_count_publishes_its_increments_once() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", registry=registry)
    count = Count(counter)
    for _ in range(5):
        count.inc()
    count.publish()
    count.publish()
    assert registry.get_sample_value("c_total") == 5
    count.inc()
    count.publish()
    assert registry.get_sample_value("c_total") == 6


def test_publishing_from_another_thread_while_the_loop_observes_loses_nothing() -> None:
    # /metrics renders in a worker thread while the event loop keeps observing.
    metrics = Metrics()
    series = metrics.for_version("m", "1")
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            metrics.publish()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for i in range(20000):
            series.predict_rows.observe(1 + i % 3)
            metrics.observe_request("/predict", "POST", 200, 0.001)
    finally:
        stop.set()
        scraper.join()
    metrics.publish()
    r = metrics.registry
    assert r.get_sample_value("bnserve_predict_rows_count", {"model": "m", "version": "1"}) == 20000
    assert r.get_sample_value("bnserve_predict_rows_sum", {"model": "m", "version": "1"}) == sum(
        1 + i % 3 for i in range(20000)
    )
    labels = {"route": "/predict", "method": "POST", "status": "200"}
    assert r.get_sample_value("bnserve_requests_total", labels) == 20000
    count = r.get_sample_value(
        "bnserve_request_duration_seconds_count", {"route": "/predict", "method": "POST"}
    )
    assert count == 20000


def test_render_shows_the_requests_counted_so_far() -> None:
    metrics = Metrics()
    for status in (200, 200, 422):
        metrics.observe_request("/predict", "POST", status, 0.002)
    text = metrics.render({}).decode()
    assert 'bnserve_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert 'bnserve_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'bnserve_request_duration_seconds_bucket{le="0.0025",method="POST",route="/predict"} 3.0' in text
    assert 'bnserve_request_duration_seconds_bucket{le="0.001",method="POST",route="/predict"} 0.0' in text
