"""Liveness, readiness and metadata: a load balancer and a user can tell what is served, and whether it can be."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.settings import Settings
from tests.service.serving import manifest_of, serving


def test_healthz_answers_alive(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_is_ready_once_the_artifact_is_loaded(
    client: TestClient, breast_cancer_artifact: Path
) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "model": manifest_of(breast_cancer_artifact)["name"],
        "version": "1",
        "artifact_sha256": hashlib.sha256(
            (breast_cancer_artifact / "weights.safetensors").read_bytes()
        ).hexdigest(),
    }


@pytest.mark.parametrize("served", ["client", "digits_client", "diabetes_client"])
def test_every_kind_of_trained_artifact_becomes_ready(request: pytest.FixtureRequest, served: str) -> None:
    client: TestClient = request.getfixturevalue(served)

    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_before_the_artifact_is_loaded(breast_cancer_artifact: Path) -> None:
    app = create_app(Settings(model_dir=breast_cancer_artifact, device="cpu"))
    client = TestClient(app)  # no `with`: the lifespan, which loads the artifact, has not run

    ready = client.get("/readyz")
    predict = client.post("/predict", json={"instances": [[1.0]]})

    assert client.get("/healthz").status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {"error": "not ready: not loaded yet"}
    assert predict.status_code == 503
    assert "not loaded yet" in predict.json()["error"]


def test_an_artifact_with_a_flipped_weights_byte_is_refused_with_the_reason(
    breast_cancer_artifact: Path, tmp_path: Path
) -> None:
    tampered = Path(shutil.copytree(breast_cancer_artifact, tmp_path / "tampered"))
    weights = bytearray((tampered / "weights.safetensors").read_bytes())
    weights[-1] ^= 0x01  # inside the last tensor's data: the file stays readable safetensors
    (tampered / "weights.safetensors").write_bytes(bytes(weights))

    n = len(manifest_of(tampered)["feature_names"])
    with serving(tampered) as client:
        ready = client.get("/readyz")
        predict = client.post("/predict", json={"instances": [[1.0] * n]})
        bn_stats = client.get("/bn-stats")
        alive = client.get("/healthz")

    assert ready.status_code == 503
    assert "weights.safetensors" in ready.json()["error"]
    assert "SHA-256" in ready.json()["error"]
    assert predict.status_code == 503
    assert "weights.safetensors" in predict.json()["error"]
    assert bn_stats.status_code == 503
    assert alive.status_code == 200


def test_a_missing_artifact_directory_is_refused_with_the_reason(tmp_path: Path) -> None:
    with serving(tmp_path / "nowhere") as client:
        ready = client.get("/readyz")

    assert ready.status_code == 503
    assert "no artifact directory" in ready.json()["error"]
    assert "nowhere" in ready.json()["error"]


def test_metadata_describes_the_served_classifier(client: TestClient, breast_cancer_artifact: Path) -> None:
    manifest = manifest_of(breast_cancer_artifact)

    metadata = client.get("/metadata").json()

    assert metadata["name"] == manifest["name"]
    assert metadata["task"] == "classification"
    assert metadata["feature_names"] == manifest["feature_names"]
    assert metadata["class_labels"] == manifest["class_labels"]
    assert metadata["metrics"] == manifest["metrics"] != {}
    assert metadata["training"] == manifest["training"] != {}
    assert metadata["created_at"] == manifest["created_at"]
    assert metadata["bn_fingerprint"] == manifest["bn_fingerprint"]
    assert metadata["artifact_sha256"] == manifest["weights"]["sha256"]


def test_metadata_describes_the_served_regressor(
    diabetes_client: TestClient, diabetes_artifact: Path
) -> None:
    manifest = manifest_of(diabetes_artifact)

    metadata = diabetes_client.get("/metadata").json()

    assert metadata["task"] == "regression"
    assert metadata["class_labels"] is None
    assert metadata["feature_names"] == manifest["feature_names"]
    assert metadata["artifact_sha256"] == manifest["weights"]["sha256"]
