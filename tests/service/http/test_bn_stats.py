"""GET /bn-stats shows the frozen BN statistics the service predicts with, and they never move while serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models import batchnorm_layers, load_artifact
from tests.service.serving import manifest_of, post_concurrently

VECTORS = ("running_mean", "running_var", "weight", "bias")


def frozen_part(stats: dict[str, Any]) -> dict[str, Any]:
    """The /bn-stats answer without its ``live`` section, which summarizes recent traffic by design."""
    return {key: value for key, value in stats.items() if key != "live"}


def shifted_rows(manifest: dict[str, Any], count: int, seed: int) -> list[list[float]]:
    """Rows far outside the training distribution (x * 100 + 1e3): training-mode BN would chase them."""
    std = manifest["input_standardization"]
    x = np.array(std["mean"]) + np.random.default_rng(seed).normal(size=(count, len(std["mean"]))) * np.array(
        std["std"]
    )
    return (x * 100 + 1e3).tolist()


@pytest.mark.parametrize(
    ("served", "artifact_fixture", "kind"),
    [("client", "breast_cancer_artifact", "1d"), ("digits_client", "digits_artifact", "2d")],
)
def test_bn_stats_lists_every_bn_layer_in_network_order_with_its_frozen_statistics(
    request: pytest.FixtureRequest, served: str, artifact_fixture: str, kind: str
) -> None:
    client: TestClient = request.getfixturevalue(served)
    artifact_dir: Path = request.getfixturevalue(artifact_fixture)
    network = load_artifact(artifact_dir).model

    stats = client.get("/bn-stats").json()

    recorded = [b.model_dump() for b in load_artifact(artifact_dir).batchnorm]  # the artifact's account
    assert [layer["name"] for layer in stats["layers"]] == [info["name"] for info in recorded]
    assert [name for name, _ in batchnorm_layers(network)] == [info["name"] for info in recorded]
    assert stats["statistics"] == "ema"
    for layer, info in zip(stats["layers"], recorded, strict=True):
        assert layer["kind"] == info["kind"] == kind
        for field in ("num_features", "momentum", "eps", "num_batches_tracked"):
            assert layer[field] == info[field]
        assert layer["num_batches_tracked"] > 0
        assert layer["statistics"] == "ema"
        bn = network.get_submodule(info["name"])
        for vector in VECTORS:
            values = getattr(bn, vector).tolist()
            assert layer[vector] == values
            assert layer["summary"][vector] == pytest.approx(
                {"min": min(values), "max": max(values), "mean": float(np.mean(values))}
            )


@pytest.mark.parametrize(
    ("served", "artifact_fixture"),
    [("client", "breast_cancer_artifact"), ("digits_client", "digits_artifact")],
)
def test_bn_stats_do_not_move_after_1000_requests_of_shifted_inputs(
    request: pytest.FixtureRequest, served: str, artifact_fixture: str
) -> None:
    client: TestClient = request.getfixturevalue(served)
    artifact_dir: Path = request.getfixturevalue(artifact_fixture)
    manifest = manifest_of(artifact_dir)
    probe = shifted_rows(manifest, 1, seed=1000)
    before = client.get("/bn-stats").json()
    answer_before = client.post("/predict", json={"instances": probe}).json()

    bodies = [{"instances": shifted_rows(manifest, 1 + i % 8, seed=i)} for i in range(1000)]
    responses = post_concurrently(client, "/predict", bodies)

    assert [r.status_code for r in responses] == [200] * 1000

    after = client.get("/bn-stats").json()
    assert frozen_part(after) == frozen_part(before)
    assert after["fingerprint"] == manifest["bn_fingerprint"]
    assert [layer["num_batches_tracked"] for layer in after["layers"]] == [
        info.num_batches_tracked for info in load_artifact(artifact_dir).batchnorm
    ]
    assert client.post("/predict", json={"instances": probe}).json() == answer_before
