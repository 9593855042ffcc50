"""A row's answer does not depend on the rows it is sent with: eval-mode BN is a fixed per-row affine map.

Training-mode BN would normalize each row with its batch's statistics, so its answers would change with
the company a row keeps. These properties would catch that, for the MLP (BatchNorm1d) and the CNN (BatchNorm2d).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.service.serving import manifest_of

TOLERANCE = 1e-6
SERVED = [("client", "breast_cancer_artifact"), ("digits_client", "digits_artifact")]


def probabilities(client: TestClient, rows: list[list[float]]) -> np.ndarray:
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    return np.array([list(p["probabilities"].values()) for p in response.json()["predictions"]])


def row_strategy(manifest: dict[str, Any]) -> st.SearchStrategy[list[float]]:
    """Rows within a few standard deviations of the training data's feature means."""
    std = manifest["input_standardization"]
    mean, scale = np.array(std["mean"]), np.array(std["std"])
    z = st.lists(st.floats(-4, 4), min_size=len(mean), max_size=len(mean))
    return z.map(lambda v: (mean + np.array(v) * scale).tolist())


@pytest.mark.parametrize(("served", "artifact_fixture"), SERVED)
def test_a_rows_answer_is_the_same_alone_or_anywhere_in_any_batch(
    request: pytest.FixtureRequest, served: str, artifact_fixture: str
) -> None:
    client: TestClient = request.getfixturevalue(served)
    artifact_dir: Path = request.getfixturevalue(artifact_fixture)
    rows = row_strategy(manifest_of(artifact_dir))

    @settings(max_examples=25, deadline=None, database=None)
    @given(row=rows, others=st.lists(rows, max_size=12), data=st.data())
    def check(row: list[float], others: list[list[float]], data: st.DataObject) -> None:
        position = data.draw(st.integers(0, len(others)), label="position")
        batch = [*others[:position], row, *others[position:]]

        alone = probabilities(client, [row])[0]
        together = probabilities(client, batch)

        np.testing.assert_allclose(together[position], alone, rtol=0, atol=TOLERANCE)

    check()


@pytest.mark.parametrize(("served", "artifact_fixture"), SERVED)
def test_every_row_of_a_batch_gets_the_answer_it_gets_alone(
    request: pytest.FixtureRequest, served: str, artifact_fixture: str
) -> None:
    client: TestClient = request.getfixturevalue(served)
    rows = manifest_of(request.getfixturevalue(artifact_fixture))["canary"]["inputs"]

    together = probabilities(client, rows)

    alone = np.concatenate([probabilities(client, [row]) for row in rows])
    np.testing.assert_allclose(together, alone, rtol=0, atol=TOLERANCE)
