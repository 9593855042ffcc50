"""GET /drift: validation traffic passes; one drifted feature is caught and named, with its worst layer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.serving import post_concurrently, serving
from training import TrainConfig, load_data, split_dataset

THRESHOLD = 1.5  # the documented default of BNSERVE_DRIFT_THRESHOLD


def validation_rows(artifact_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Gives back the artifact's validation split (raw rows) and its feature names, as training made them."""
    record = json.loads((artifact_dir / "manifest.json").read_text())["training"]
    cfg = TrainConfig(dataset=record["dataset"])
    _, val = split_dataset(load_data(cfg), val_fraction=record["val_fraction"], seed=record["seed"])
    return val.features, val.feature_names


def training_std(artifact_dir: Path) -> np.ndarray:
    return np.asarray(
        json.loads((artifact_dir / "manifest.json").read_text())["input_standardization"]["std"]
    )


def send(client: TestClient, rows: np.ndarray, *, chunk: int = 16) -> None:
    bodies = [{"instances": rows[i : i + chunk].tolist()} for i in range(0, len(rows), chunk)]
    for response in post_concurrently(client, "/predict", bodies):
        assert response.status_code == 200, response.text


def drift_after(client: TestClient, rows: np.ndarray) -> dict[str, Any]:
    """Gives back GET /drift after a fresh window received ``rows``."""
    assert client.post("/drift/reset").status_code == 200
    send(client, rows)
    answer: dict[str, Any] = client.get("/drift").json()
    return answer


@pytest.fixture(
    scope="module",
    params=[(d, r) for d in ("breast_cancer", "digits") for r in ("torch", "lean")],
    ids=lambda p: "-".join(p),
)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, Path]]:
    """An MLP and a CNN, with a minimum of rows their validation splits (113 and 359 rows) reach, on both
    runtimes (the lean one hands the monitor numpy activations)."""
    dataset, runtime = request.param
    artifact_dir: Path = request.getfixturevalue(f"{dataset}_artifact")
    with serving(artifact_dir, drift_min_rows=100, runtime=runtime) as client:
        yield client, artifact_dir


def test_validation_rows_score_below_the_threshold(served: tuple[TestClient, Path]) -> None:
    client, artifact_dir = served
    rows, _ = validation_rows(artifact_dir)
    answer = drift_after(client, rows)
    assert answer["threshold"] == THRESHOLD
    assert answer["rows"] == len(rows)
    assert answer["verdict"] == "ok", answer["message"]
    assert answer["score"] < THRESHOLD and answer["alert"] is False


@pytest.mark.parametrize("change", ["times_10", "plus_3_std"])
def test_one_drifted_feature_is_caught_and_named_with_the_most_affected_layer(
    served: tuple[TestClient, Path], change: str
) -> None:
    client, artifact_dir = served
    rows, names = validation_rows(artifact_dir)
    baseline = drift_after(client, rows)
    std = training_std(artifact_dir)
    j = int(np.argmax(std))  # the widest feature: for digits a pixel that is often lit, not a blank border
    drifted = rows.copy()
    if change == "times_10":
        drifted[:, j] *= 10
    else:
        drifted[:, j] += 3 * std[j]

    answer = drift_after(client, drifted)

    assert answer["verdict"] == "drift" and answer["alert"] is True, answer["message"]
    assert answer["score"] > THRESHOLD
    assert answer["worst_feature"]["name"] == names[j]
    assert answer["input"]["worst_channels"][0]["feature"] == names[j]
    layers = {layer["name"]: layer["score"] for layer in answer["layers"]}
    most_affected = max(layers, key=layers.__getitem__)
    assert answer["worst_layer"] == {"name": most_affected, "score": layers[most_affected]}
    if answer["layers"][0]["kind"] == "1d":  # conv channels average over H*W: one pixel barely moves them
        before = {layer["name"]: layer["score"] for layer in baseline["layers"]}
        assert layers[most_affected] > before[most_affected]
    assert names[j] in answer["message"] and most_affected in answer["message"]


def test_too_few_rows_is_insufficient_data_not_no_drift(served: tuple[TestClient, Path]) -> None:
    client, artifact_dir = served
    rows, _ = validation_rows(artifact_dir)
    answer = drift_after(client, rows[:20])
    assert answer["verdict"] == "insufficient_data"
    assert answer["alert"] is False
    assert answer["rows"] == 20 and answer["min_rows"] == 100
    assert "insufficient data" in answer["message"] and "not a 'no drift'" in answer["message"]


def test_reset_starts_an_empty_window(served: tuple[TestClient, Path]) -> None:
    client, artifact_dir = served
    rows, _ = validation_rows(artifact_dir)
    send(client, rows[:32])
    reset = client.post("/drift/reset").json()
    assert reset["reset"] is True
    answer = client.get("/drift").json()
    assert answer["rows"] == 0 and answer["rows_seen"] == 0
    assert answer["verdict"] == "insufficient_data" and answer["score"] is None
    assert answer["layers"] == [] and answer["input"] is None


def test_drift_reports_every_bn_layer_and_input_feature(served: tuple[TestClient, Path]) -> None:
    client, artifact_dir = served
    rows, names = validation_rows(artifact_dir)
    answer = drift_after(client, rows[:50])
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    assert [layer["name"] for layer in answer["layers"]] == [
        s["name"] for s in manifest["layers"] if s["type"].startswith("BatchNorm")
    ]
    assert [feature["feature"] for feature in answer["input"]["features"]] == names
    for layer in answer["layers"]:
        assert layer["rows"] == 50
        assert {"score", "rms_shift", "max_abs_shift", "mean_abs_log_var_ratio", "worst_channels"} <= set(
            layer
        )
        assert len(layer["worst_channels"]) == 5
    assert "features" not in client.get("/drift", params={"features": "false", "top": 2}).json()["input"]


def test_fingerprint_is_unchanged_after_monitored_traffic(served: tuple[TestClient, Path]) -> None:
    client, artifact_dir = served
    rows, _ = validation_rows(artifact_dir)
    before = client.get("/bn-stats", params={"vectors": "false"}).json()
    send(client, rows)
    send(client, rows * 10)
    client.get("/drift")
    client.post("/drift/reset")
    after = client.get("/bn-stats").json()
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    assert after["fingerprint"] == before["fingerprint"] == manifest["bn_fingerprint"]
    predictor = client.app.state.predictor  # type: ignore[attr-defined]
    assert predictor.drift is not None and predictor.drift.rows_seen == 0


def test_bn_stats_links_to_the_live_drift(served: tuple[TestClient, Path]) -> None:
    client, _ = served
    live = client.get("/bn-stats", params={"vectors": "false"}).json()["live"]
    assert live["href"].startswith("/drift?model=") and live["enabled"] is True
    assert live["verdict"] in ("ok", "drift", "insufficient_data")


def test_a_monitor_fault_never_fails_a_prediction(breast_cancer_artifact: Path) -> None:
    rows, _ = validation_rows(breast_cancer_artifact)
    with serving(breast_cancer_artifact) as client:
        monitor = client.app.state.predictor.drift  # type: ignore[attr-defined]
        monitor.capture._kinds["bn1"] = ("1d", 999)  # the next batch's bn1 output does not fit its columns
        assert client.post("/predict", json={"instances": rows[:3].tolist()}).status_code == 200
        answer = client.get("/drift").json()
        assert answer["verdict"] == "error" and "(3, 999)" in answer["message"]
        assert client.post("/predict", json={"instances": rows[:3].tolist()}).status_code == 200
        monitor.capture._kinds["bn1"] = ("1d", 32)
        assert client.post("/drift/reset").status_code == 200  # restarts it
        assert client.post("/predict", json={"instances": rows[:3].tolist()}).status_code == 200
        assert client.get("/drift").json()["rows"] == 3


def test_drift_can_be_turned_off(breast_cancer_artifact: Path) -> None:
    with serving(breast_cancer_artifact, drift_enabled=False) as client:
        predictor = client.app.state.predictor  # type: ignore[attr-defined]
        assert predictor.runtime.observer is None and predictor.drift is None
        answer = client.get("/drift").json()
        assert answer["enabled"] is False and answer["verdict"] == "disabled"
        assert "BNSERVE_DRIFT_ENABLED" in answer["message"]
        live = client.get("/bn-stats").json()["live"]
        assert live == {"href": "/drift?model=breast_cancer&version=1", "enabled": False}
