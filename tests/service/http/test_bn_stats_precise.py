"""GET /bn-stats and /predict for artifacts with precise statistics, from one process and from two ranks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models import load_artifact
from tests.ranks import torchrun
from tests.service.serving import manifest_of, serving
from training import TrainConfig, train


@pytest.fixture(scope="module")
def precise_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("artifacts") / "wine"
    return train(
        TrainConfig(
            dataset="wine",
            hidden=(16, 8),
            epochs=3,
            bn_stats="precise",
            device="cpu",
            progress=False,
            out_dir=str(out_dir),
        )
    )


@pytest.fixture(scope="module", params=["torch", "lean"])
def precise_client(precise_artifact: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """Served by both runtimes (the lean one reads the statistics from weights.safetensors)."""
    with serving(precise_artifact, runtime=request.param) as client:
        yield client


def test_bn_stats_shows_which_statistics_a_precise_artifact_holds_and_the_emas_gap(
    precise_client: TestClient, precise_artifact: Path
) -> None:
    stats = precise_client.get("/bn-stats").json()

    recorded = manifest_of(precise_artifact)["bn_statistics"]
    assert recorded["kind"] == "precise" and recorded["world_size"] == 1
    assert [gap["layer"] for gap in recorded["ema_gap"]] == ["bn1", "bn2"]
    assert stats["statistics"] == "precise"
    assert stats["bn_statistics"] == recorded
    assert [layer["statistics"] for layer in stats["layers"]] == ["precise", "precise"]
    network = load_artifact(precise_artifact).model
    for layer in stats["layers"]:
        assert layer["running_var"] == network.get_submodule(layer["name"]).running_var.tolist()
    assert precise_client.get("/metadata").json()["bn_statistics"] == recorded


@pytest.mark.slow
def test_an_artifact_trained_by_two_ranks_serves_what_its_reloaded_network_computes(tmp_path: Path) -> None:
    out = tmp_path / "bc"
    result = torchrun(
        ["--dataset", "breast_cancer", "--epochs", "3", "--bn-stats", "precise", "--out", str(out)]
    )
    assert result.returncode == 0, result.stderr
    artifact = load_artifact(out)
    rows = (
        artifact.manifest.canary.inputs
        + np.asarray(artifact.manifest.input_standardization.mean)[None].tolist()
    )

    with serving(out) as client:
        answer = client.post("/predict", json={"instances": rows}).json()
        stats = client.get("/bn-stats?vectors=false").json()

    with torch.inference_mode():
        expected = torch.softmax(artifact.model(torch.tensor(rows)), dim=1).numpy()
    labels = artifact.manifest.class_labels
    assert labels is not None
    got = np.array([[p["probabilities"][label] for label in labels] for p in answer["predictions"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert stats["bn_statistics"]["world_size"] == 2 and stats["statistics"] == "precise"
    assert stats["fingerprint"] == stats["artifact_fingerprint"] == artifact.bn_fingerprint
