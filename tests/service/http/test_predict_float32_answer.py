"""POST /predict with ``Accept: application/octet-stream``: the bulk answer, raw little-endian float32 (B, K)."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from service.http.routes.predict import prefers_float32
from tests.service.serving import rows_like_training

BULK = {"accept": "application/octet-stream"}
F32_BODY = {"content-type": "application/octet-stream"}


def decoded(response: httpx.Response) -> np.ndarray:
    rows, k = (int(n) for n in response.headers["x-bnserve-shape"].split(","))
    return np.frombuffer(response.content, dtype="<f4").reshape(rows, k)


def json_columns(answer: dict, columns: list[str]) -> np.ndarray:
    predictions = answer["predictions"]
    if columns == ["value"]:
        return np.float32([[p["value"]] for p in predictions])
    return np.float32([[p["probabilities"][c] for c in columns] for p in predictions])


@pytest.mark.parametrize("client_fixture", ["client", "digits_client", "diabetes_client"])
@pytest.mark.parametrize("float32_body", [False, True], ids=["json body", "float32 body"])
def test_the_bulk_answer_holds_the_json_answers_numbers_exactly(
    client_fixture: str, float32_body: bool, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue(client_fixture)
    rows = rows_like_training(client, 37)
    metadata = client.get("/metadata").json()

    if float32_body:
        bulk = client.post("/predict", content=rows.astype("<f4").tobytes(), headers={**F32_BODY, **BULK})
    else:
        bulk = client.post("/predict", json={"instances": rows.tolist()}, headers=BULK)
    as_json = client.post("/predict", json={"instances": rows.tolist()})

    assert bulk.status_code == 200, bulk.text
    assert bulk.headers["content-type"] == "application/octet-stream"
    columns = json.loads(bulk.headers["x-bnserve-columns"])
    assert columns == (metadata["class_labels"] or ["value"])
    assert bulk.headers["x-bnserve-artifact-sha256"] == metadata["artifact_sha256"]
    assert bulk.headers["x-bnserve-shape"] == f"37,{len(columns)}"
    assert len(bulk.content) == 37 * len(columns) * 4
    # The JSON answer writes each float32 as the shortest float64 repr: it reads back to the same float32.
    assert np.array_equal(decoded(bulk), json_columns(as_json.json(), columns))


def test_the_bulk_answer_of_one_row_is_that_rows_probabilities(client: TestClient) -> None:
    row = rows_like_training(client, 1, seed=3)
    bulk = decoded(client.post("/predict", json={"instances": row.tolist()}, headers=BULK))
    assert bulk.shape == (1, 2)
    assert bulk.sum() == pytest.approx(1.0, abs=1e-6)
    answer = client.post("/predict", json={"instances": row.tolist()}).json()["predictions"][0]
    assert answer["label"] == ["malignant", "benign"][int(bulk[0].argmax())]


def test_a_bad_request_asking_for_the_bulk_answer_still_gets_a_json_error(client: TestClient) -> None:
    row = rows_like_training(client, 1)[0].tolist()
    response = client.post("/predict", json={"instances": [row[:-1]]}, headers=BULK)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "expected 30 features, got 29 at row 0"}
    bad_bytes = client.post("/predict", content=b"\x00" * 7, headers={**F32_BODY, **BULK})
    assert bad_bytes.status_code == 422 and "whole number of rows" in bad_bytes.json()["error"]


@pytest.mark.parametrize(
    ("accept", "bulk"),
    [
        ("application/octet-stream", True),
        ("Application/Octet-Stream", True),
        ("application/json;q=0.5, application/octet-stream", True),
        ("application/*;q=0.2, application/octet-stream;q=0.9", True),
        ("*/*;q=0.1, application/octet-stream", True),
        ("*/*", False),
        ("application/json", False),
        ("application/octet-stream, application/json", False),  # a tie: JSON, the default
        ("application/octet-stream;q=0", False),
        ("application/octet-stream;q=oops", False),
        ("text/html", False),
        ("application/*", False),
    ],
)
def test_accept_picks_the_answer_by_quality_and_specificity(accept: str, bulk: bool) -> None:
    assert prefers_float32(accept.encode()) is bulk


def test_accept_over_http_picks_the_format_and_no_accept_means_json(client: TestClient) -> None:
    body = {"instances": rows_like_training(client, 2).tolist()}
    assert client.post("/predict", json=body).headers["content-type"] == "application/json"
    weighted = client.post(
        "/predict", json=body, headers={"accept": "application/json;q=0.4, application/octet-stream;q=0.6"}
    )
    assert weighted.headers["content-type"] == "application/octet-stream"
    # Two Accept headers count as one list.
    two = client.post(
        "/predict",
        json=body,
        headers=[("accept", "application/json;q=0.1"), ("accept", "application/octet-stream")],
    )
    assert two.headers["content-type"] == "application/octet-stream"


def test_the_documented_route_gives_the_same_bulk_answer_as_the_fast_dispatch(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)

    async def through_the_router(scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI's middleware stack and router, not BNServe's dispatch
        await FastAPI.__call__(app, scope, receive, send)

    async def both() -> tuple[httpx.Response, httpx.Response]:
        body = rows_like_training(client, 5).astype("<f4").tobytes()
        out = []
        for asgi in (app, through_the_router):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as c:
                out.append(await c.post("/predict", content=body, headers={**F32_BODY, **BULK}))
        return out[0], out[1]

    fast, routed = asyncio.run(both())
    assert routed.status_code == fast.status_code == 200
    assert routed.content == fast.content
    for name in (
        "content-type",
        "content-length",
        "x-bnserve-shape",
        "x-bnserve-columns",
        "x-bnserve-artifact-sha256",
    ):
        assert routed.headers[name] == fast.headers[name], name


def test_the_openapi_schema_documents_the_bulk_answer(client: TestClient) -> None:
    ok = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "application/octet-stream"}
    assert "x-bnserve-shape" in ok["content"]["application/octet-stream"]["schema"]["description"]
