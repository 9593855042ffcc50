"""POST /predict with an application/octet-stream body: raw little-endian float32 rows, the bulk path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.serving import rows_like_training

OCTET = {"content-type": "application/octet-stream"}


def post_float32(client: TestClient, rows: np.ndarray) -> Any:
    return client.post("/predict", content=rows.astype("<f4").tobytes(), headers=OCTET)


@pytest.mark.parametrize("client_fixture", ["client", "digits_client", "diabetes_client"])
def test_a_float32_body_gets_the_same_answer_as_the_json_body(
    client_fixture: str, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue(client_fixture)
    rows = rows_like_training(client, 37)

    binary = post_float32(client, rows)
    as_json = client.post("/predict", json={"instances": rows.tolist()})

    assert binary.status_code == 200, binary.text
    assert binary.json() == as_json.json()


def test_a_float32_body_that_is_not_whole_rows_is_refused_with_the_row_size(client: TestClient) -> None:
    row = rows_like_training(client, 1)

    response = client.post("/predict", content=row.tobytes()[:-2], headers=OCTET)

    assert response.status_code == 422
    assert "120 bytes each" in response.json()["error"] and "got 118 bytes" in response.json()["error"]


def test_a_float32_body_with_nan_names_the_row_and_column(client: TestClient) -> None:
    fingerprint = client.get("/bn-stats").json()["fingerprint"]
    rows = rows_like_training(client, 4)
    rows[2, 5] = np.inf

    response = post_float32(client, rows)

    assert response.status_code == 422
    assert "row 2, column 5" in response.json()["error"]
    assert client.get("/bn-stats").json()["fingerprint"] == fingerprint


def test_an_empty_or_oversized_float32_body_is_refused(client: TestClient) -> None:
    assert client.post("/predict", content=b"", headers=OCTET).status_code == 422
    max_rows = client.get("/metadata").json()["serving"]["max_rows"]
    too_many = rows_like_training(client, max_rows + 1)

    response = post_float32(client, too_many)

    assert response.status_code == 413
    assert f"at most {max_rows} rows" in response.json()["error"]
