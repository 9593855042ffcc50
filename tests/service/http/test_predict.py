"""POST /predict answers each row with the frozen network's output: what the artifact's loader computes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models import load_artifact
from tests.service.serving import manifest_of

SERVED = [  # (client fixture, artifact fixture)
    ("client", "breast_cancer_artifact"),
    ("digits_client", "digits_artifact"),
    ("diabetes_client", "diabetes_artifact"),
]


def typical_rows(manifest: dict[str, Any], count: int, seed: int = 0) -> list[list[float]]:
    """Rows spread like the training data: feature mean plus up to a few standard deviations."""
    std = manifest["input_standardization"]
    z = np.random.default_rng(seed).uniform(-3, 3, size=(count, len(std["mean"])))
    return (np.array(std["mean"]) + z * np.array(std["std"])).tolist()


def expected_outputs(artifact_dir: Path, rows: list[list[float]]) -> np.ndarray:
    """What the loader's network gives: probabilities (softmax) for a classifier, values for a regressor."""
    artifact = load_artifact(artifact_dir)
    with torch.inference_mode():
        out = artifact.model(torch.tensor(rows, dtype=torch.float32))
    if artifact.manifest.task == "classification":
        out = torch.softmax(out, dim=1)
    return out.numpy()


def answered_outputs(predictions: list[dict[str, Any]], class_labels: list[str] | None) -> np.ndarray:
    if class_labels is None:
        return np.array([[p["value"]] for p in predictions])
    return np.array([[p["probabilities"][label] for label in class_labels] for p in predictions])


@pytest.mark.parametrize("count", [1, 2, 16])
def test_predict_answers_a_label_and_probabilities_keyed_by_label_for_each_row(
    client: TestClient, breast_cancer_artifact: Path, count: int
) -> None:
    manifest = manifest_of(breast_cancer_artifact)
    labels = manifest["class_labels"]

    response = client.post("/predict", json={"instances": typical_rows(manifest, count)})

    assert response.status_code == 200
    answer = response.json()
    assert answer["model"] == manifest["name"]
    assert (
        answer["artifact_sha256"]
        == hashlib.sha256((breast_cancer_artifact / "weights.safetensors").read_bytes()).hexdigest()
    )
    assert len(answer["predictions"]) == count
    for prediction in answer["predictions"]:
        probabilities = prediction["probabilities"]
        assert list(probabilities) == labels
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["label"] == max(labels, key=probabilities.__getitem__)


def test_regressor_answers_one_value_per_row(diabetes_client: TestClient, diabetes_artifact: Path) -> None:
    manifest = manifest_of(diabetes_artifact)

    answer = diabetes_client.post("/predict", json={"instances": typical_rows(manifest, 3)}).json()

    assert answer["model"] == manifest["name"]
    assert [set(p) for p in answer["predictions"]] == [{"value"}] * 3
    assert all(isinstance(p["value"], float) for p in answer["predictions"])


def test_rows_as_objects_keyed_by_feature_name_get_the_same_answer_as_arrays(
    client: TestClient, breast_cancer_artifact: Path
) -> None:
    manifest = manifest_of(breast_cancer_artifact)
    rows = typical_rows(manifest, 3)
    # Key order does not matter: the names do.
    objects = [dict(reversed(list(zip(manifest["feature_names"], row, strict=True)))) for row in rows]

    as_arrays = client.post("/predict", json={"instances": rows}).json()
    as_objects = client.post("/predict", json={"instances": objects}).json()

    assert as_objects == as_arrays


@pytest.mark.parametrize(("served", "artifact_fixture"), SERVED)
def test_predict_equals_the_loaders_network_output(
    request: pytest.FixtureRequest, served: str, artifact_fixture: str
) -> None:
    client: TestClient = request.getfixturevalue(served)
    artifact_dir: Path = request.getfixturevalue(artifact_fixture)
    manifest = manifest_of(artifact_dir)
    rows = typical_rows(manifest, 32, seed=1)

    predictions = client.post("/predict", json={"instances": rows}).json()["predictions"]

    # The service folds BN into the preceding layer: equal up to float32 rounding.
    expected = expected_outputs(artifact_dir, rows)
    np.testing.assert_allclose(
        answered_outputs(predictions, manifest["class_labels"]), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(("served", "artifact_fixture"), SERVED)
def test_predict_reproduces_the_canary_outputs_recorded_in_the_manifest(
    request: pytest.FixtureRequest, served: str, artifact_fixture: str
) -> None:
    client: TestClient = request.getfixturevalue(served)
    manifest = manifest_of(request.getfixturevalue(artifact_fixture))
    canary = manifest["canary"]

    predictions = client.post("/predict", json={"instances": canary["inputs"]}).json()["predictions"]

    recorded = torch.tensor(canary["outputs"])
    if manifest["task"] == "classification":
        recorded = torch.softmax(recorded, dim=1)
    answered = answered_outputs(predictions, manifest["class_labels"])
    np.testing.assert_allclose(answered, recorded.numpy(), rtol=canary["rtol"], atol=canary["atol"])
