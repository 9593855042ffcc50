"""GET /metrics: Prometheus text that prometheus-client parses, with counters that follow the traffic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.http.app import create_app
from service.monitoring.metrics import Metrics, MetricsError
from service.settings import Settings
from tests.service.serving import serving

ROW = [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589,
       153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622,
       0.6656, 0.7119, 0.2654, 0.4601, 0.1189]  # fmt: skip
MV = {"model": "breast_cancer", "version": "1"}  # the per-version series' labels


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Gives back every sample of GET /metrics, parsed by prometheus-client, by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def client(breast_cancer_artifact: Path) -> Iterator[TestClient]:
    with serving(breast_cancer_artifact, drift_min_rows=10) as client:
        yield client


def test_metrics_parse_and_request_counters_move_with_traffic(client: TestClient) -> None:
    before = scrape(client)
    for rows in (1, 3, 5):
        assert client.post("/predict", json={"instances": [ROW] * rows}).status_code == 200
    after = scrape(client)

    ok = {"route": "/predict", "method": "POST", "status": "200"}
    assert value(after, "bnserve_requests_total", **ok) == value(before, "bnserve_requests_total", **ok) + 3
    timed = {"route": "/predict", "method": "POST"}
    count = "bnserve_request_duration_seconds_count"
    assert value(after, count, **timed) == value(before, count, **timed) + 3
    assert (
        value(after, "bnserve_predict_rows_count", **MV)
        == value(before, "bnserve_predict_rows_count", **MV) + 3
    )
    assert (
        value(after, "bnserve_predict_rows_sum", **MV) == value(before, "bnserve_predict_rows_sum", **MV) + 9
    )
    assert value(after, "bnserve_batch_rows_sum", **MV) == value(before, "bnserve_batch_rows_sum", **MV) + 9
    assert (
        value(after, "bnserve_batch_rows_count", **MV) >= value(before, "bnserve_batch_rows_count", **MV) + 1
    )
    # The scrape before this one is counted too.
    scraped = {"route": "/metrics", "method": "GET", "status": "200"}
    assert value(after, "bnserve_requests_total", **scraped) >= 1


def test_requests_are_labelled_by_route_template_and_status(client: TestClient) -> None:
    before = scrape(client)
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/bn-stats", params={"layer": "bn1", "vectors": "false"}).status_code == 200
    assert client.post("/predict", json={"instances": [[1.0, 2.0]]}).status_code == 422
    after = scrape(client)
    for labels in (
        {"route": "unmatched", "method": "GET", "status": "404"},
        {"route": "/bn-stats", "method": "GET", "status": "200"},
        {"route": "/predict", "method": "POST", "status": "422"},
    ):
        assert (
            value(after, "bnserve_requests_total", **labels)
            == value(before, "bnserve_requests_total", **labels) + 1
        )
    assert not any("no/such" in str(key) for key in after)


def test_model_info_names_the_artifact(client: TestClient, breast_cancer_artifact: Path) -> None:
    ready = client.get("/readyz").json()
    fingerprint = json.loads((breast_cancer_artifact / "manifest.json").read_text())["bn_fingerprint"]
    labels = {
        "model": ready["model"],
        "version": "1",
        "artifact_sha256": ready["artifact_sha256"],
        "bn_fingerprint": fingerprint,
    }
    assert value(scrape(client), "bnserve_model_info", **labels) == 1.0


def test_drift_series_follow_the_monitor(client: TestClient) -> None:
    client.post("/drift/reset")
    empty = scrape(client)
    assert value(empty, "bnserve_drift_verdict", **MV, verdict="insufficient_data") == 1.0
    assert value(empty, "bnserve_drift_window_rows", **MV) == 0.0

    assert client.post("/predict", json={"instances": [ROW] * 20}).status_code == 200
    samples = scrape(client)
    drift = client.get("/drift").json()
    assert value(samples, "bnserve_drift_window_rows", **MV) == drift["rows"] == 20
    assert value(samples, "bnserve_drift_score_overall", **MV) == pytest.approx(drift["score"])
    assert value(samples, "bnserve_drift_score", **MV, layer="input") == pytest.approx(
        drift["input"]["score"]
    )
    for layer in drift["layers"]:
        assert value(samples, "bnserve_drift_score", **MV, layer=layer["name"]) == pytest.approx(
            layer["score"]
        )
    # 20 copies of one row: no spread at all, so a drift verdict, and its alert.
    assert drift["verdict"] == "drift"
    assert value(samples, "bnserve_drift_alert", **MV) == 1.0
    assert value(samples, "bnserve_drift_verdict", **MV, verdict="drift") == 1.0
    assert value(samples, "bnserve_drift_verdict", **MV, verdict="ok") == 0.0


def test_an_unhandled_error_is_counted_as_500(breast_cancer_artifact: Path) -> None:
    app = create_app(Settings(model_dir=breast_cancer_artifact, device="cpu"))
    with TestClient(app, raise_server_exceptions=False) as client:

        def broken(rows: object, waiter: object = None) -> object:
            raise RuntimeError("boom")

        app.state.predictor.enqueue = broken
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 500
        assert (
            value(scrape(client), "bnserve_requests_total", route="/predict", method="POST", status="500")
            == 1.0
        )


def test_apps_in_one_process_keep_their_own_counts(breast_cancer_artifact: Path) -> None:
    with serving(breast_cancer_artifact) as first, serving(breast_cancer_artifact) as second:
        first.post("/predict", json={"instances": [ROW]})
        ok = {"route": "/predict", "method": "POST", "status": "200"}
        assert value(scrape(first), "bnserve_requests_total", **ok) == 1.0
        assert value(scrape(second), "bnserve_requests_total", **ok) == 0.0


def test_multiprocess_dir_without_the_environment_is_refused(tmp_path: Path) -> None:
    # prometheus-client chose in-process values at import: the workers would write nothing to share.
    with pytest.raises(MetricsError, match="set it in the environment before starting"):
        Metrics(multiprocess_dir=tmp_path)


WORKER = textwrap.dedent(
    """
    import sys
    from fastapi.testclient import TestClient
    from service.http.app import create_app
    from service.settings import Settings

    model_dir, requests, scrape = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "True"
    with TestClient(create_app(Settings(model_dir=model_dir, device="cpu"))) as client:
        for _ in range(requests):
            assert client.post("/predict", json={"instances": [[0.0] * 30] * 2}).status_code == 200
        if scrape:
            print(client.get("/metrics").text)
    """
)


@pytest.mark.slow
def test_multiprocess_metrics_add_up_every_worker(breast_cancer_artifact: Path, tmp_path: Path) -> None:
    """Three worker processes share PROMETHEUS_MULTIPROC_DIR; the last one's /metrics counts all of them."""
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def worker(requests: int, scrape: bool = False) -> str:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(breast_cancer_artifact), str(requests), str(scrape)],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker(3)
    worker(4)
    text = worker(5, scrape=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = {"route": "/predict", "method": "POST", "status": "200"}
    assert value(samples, "bnserve_requests_total", **ok) == 12
    assert value(samples, "bnserve_predict_rows_sum", **MV) == 24
    assert value(samples, "bnserve_batch_rows_sum", **MV) == 24
    # The finished workers marked themselves dead: only the live one's drift window counts.
    assert value(samples, "bnserve_drift_window_rows", **MV) == 10


def test_a_request_the_router_answers_for_predict_is_counted_under_its_template(client: TestClient) -> None:
    before = scrape(client)
    assert client.get("/predict").status_code == 405  # the router's /predict route, not the fast dispatch
    after = scrape(client)
    labels = {"route": "/predict", "method": "GET", "status": "405"}
    assert (
        value(after, "bnserve_requests_total", **labels)
        == value(before, "bnserve_requests_total", **labels) + 1
    )
