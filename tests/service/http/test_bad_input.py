"""Every bad request gets a JSON ``{"error": ...}`` with the right 4xx and a message naming the problem.

None of them is a 500, none moves the BN statistics, and the service keeps answering afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.serving import manifest_of, serving

MAX_ROWS = 8
MAX_BODY_BYTES = 8192


@dataclass
class Sample:
    """A good row of the served model, and its feature names."""

    row: list[float]
    names: list[str]

    def body(self, instances: Any) -> bytes:
        # json.dumps writes float("nan") as NaN and float("inf") as Infinity: what a careless client sends.
        return json.dumps({"instances": instances}).encode()

    def with_value(self, column: int, value: Any) -> list[Any]:
        row: list[Any] = list(self.row)
        row[column] = value
        return row

    def as_object(self) -> dict[str, float]:
        return dict(zip(self.names, self.row, strict=True))


@dataclass
class Case:
    """A bad request: ``request(sample)`` gives httpx keyword arguments (method and url included)."""

    request: Callable[[Sample], dict[str, Any]]
    status: int
    says: Callable[[Sample], list[str]]  # fragments the error message must contain


def post(body: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    return {"method": "POST", "url": "/predict", "content": body, "headers": headers}


def chunks(body: bytes) -> Iterator[bytes]:
    """A streamed body: sent chunked, without a Content-Length to check up front."""
    for start in range(0, len(body), 1024):
        yield body[start : start + 1024]


CASES = {
    "too few features": Case(
        lambda s: post(s.body([s.row[:-1]])),
        422,
        lambda s: [f"expected {len(s.row)} features, got {len(s.row) - 1} at row 0"],
    ),
    "too many features in the second row": Case(
        lambda s: post(s.body([s.row, [*s.row, 1.0]])),
        422,
        lambda s: [f"expected {len(s.row)} features, got {len(s.row) + 1} at row 1"],
    ),
    "a string value": Case(
        lambda s: post(s.body([s.row, s.with_value(3, "abc")])),
        422,
        lambda s: ["expected a number", "row 1, column 3", repr(s.names[3]), "'abc'"],
    ),
    "a null value": Case(
        lambda s: post(s.body([s.with_value(2, None)])),
        422,
        lambda s: ["expected a number", "row 0, column 2"],
    ),
    "a boolean value": Case(
        lambda s: post(s.body([s.with_value(0, True)])),
        422,
        lambda s: ["expected a number", "row 0, column 0"],
    ),
    "NaN": Case(
        lambda s: post(s.body([s.row, s.row, s.with_value(4, float("nan"))])),
        422,
        lambda s: ["finite number", "row 2, column 4", repr(s.names[4]), "nan"],
    ),
    "Infinity": Case(
        lambda s: post(s.body([s.with_value(1, float("inf"))])),
        422,
        lambda s: ["finite number", "row 0, column 1", "inf"],
    ),
    "-Infinity": Case(
        lambda s: post(s.body([s.row, s.with_value(0, float("-inf"))])),
        422,
        lambda s: ["finite number", "row 1, column 0", "-inf"],
    ),
    "a number beyond float32": Case(
        lambda s: post(s.body([s.with_value(5, 1e39)])),
        422,
        lambda s: ["finite number", "row 0, column 5", "float32"],
    ),
    "an integer beyond any float": Case(
        lambda s: post(s.body([s.with_value(6, 10**400)])),
        422,
        lambda s: ["finite number", "row 0, column 6", "401 digits"],
    ),
    "empty instances": Case(lambda s: post(s.body([])), 422, lambda s: ["at least one row", "empty"]),
    "no instances key": Case(
        lambda s: post(json.dumps({"rows": [s.row]}).encode()), 422, lambda s: ['{"instances"', "'rows'"]
    ),
    "instances not a list": Case(
        lambda s: post(json.dumps({"instances": s.as_object()}).encode()),
        422,
        lambda s: ["list of rows", "dict"],
    ),
    "a row that is a number": Case(lambda s: post(s.body([1.0])), 422, lambda s: ["got float at row 0"]),
    "an unknown feature name": Case(
        lambda s: post(s.body([s.as_object(), s.as_object() | {"colour": 1.0}])),
        422,
        lambda s: ["unknown feature 'colour' at row 1"],
    ),
    "a missing feature name": Case(
        lambda s: post(s.body([{k: v for k, v in s.as_object().items() if k != s.names[0]}])),
        422,
        lambda s: [f"missing feature {s.names[0]!r} at row 0"],
    ),
    "more rows than the limit": Case(
        lambda s: post(s.body([s.row] * (MAX_ROWS + 1))),
        413,
        lambda s: [f"at most {MAX_ROWS} rows", f"got {MAX_ROWS + 1}"],
    ),
    "a body over the size limit": Case(
        lambda s: post(s.body([s.row]) + b" " * MAX_BODY_BYTES),
        413,
        lambda s: [f"at most {MAX_BODY_BYTES} bytes"],
    ),
    "a chunked body over the size limit": Case(
        lambda s: post(b"") | {"content": chunks(s.body([s.row]) + b" " * MAX_BODY_BYTES)},
        413,
        lambda s: [f"at most {MAX_BODY_BYTES} bytes, got more"],  # counted as it arrived
    ),
    "malformed JSON": Case(lambda s: post(b'{"instances": [[1.0, 2.0'), 400, lambda s: ["malformed JSON"]),
    "an empty body": Case(lambda s: post(b""), 400, lambda s: ["malformed JSON"]),
    "JSON nested too deeply": Case(
        lambda s: post(b'{"instances": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        400,
        lambda s: ["malformed JSON", "nested more than 1024 levels"],
    ),
    "a text/plain body": Case(
        lambda s: post(s.body([s.row]), content_type="text/plain"),
        415,
        lambda s: ["application/json", "'text/plain'"],
    ),
    "no content type": Case(
        lambda s: post(s.body([s.row]), content_type=None), 415, lambda s: ["application/json"]
    ),
    "GET /predict": Case(
        lambda s: {"method": "GET", "url": "/predict"},
        405,
        lambda s: ["method GET is not allowed on /predict", "POST"],
    ),
    "POST /bn-stats": Case(
        lambda s: {"method": "POST", "url": "/bn-stats"},
        405,
        lambda s: ["method POST is not allowed on /bn-stats"],
    ),
    "an unknown path": Case(
        lambda s: {"method": "GET", "url": "/predictions"}, 404, lambda s: ["no route GET /predictions"]
    ),
    "an unknown BN layer": Case(
        lambda s: {"method": "GET", "url": "/bn-stats?layer=bn99"}, 404, lambda s: ["no BN layer 'bn99'"]
    ),
    "vectors not a boolean": Case(
        lambda s: {"method": "GET", "url": "/bn-stats?vectors=maybe"}, 422, lambda s: ["vectors", "'maybe'"]
    ),
}


@pytest.fixture(scope="module")
def limited_client(breast_cancer_artifact: Path) -> Iterator[TestClient]:
    with serving(breast_cancer_artifact, max_rows=MAX_ROWS, max_body_bytes=MAX_BODY_BYTES) as client:
        yield client


@pytest.fixture(scope="module")
def sample(breast_cancer_artifact: Path) -> Sample:
    manifest = manifest_of(breast_cancer_artifact)
    return Sample(row=manifest["canary"]["inputs"][0], names=manifest["feature_names"])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_request_gets_its_status_and_a_json_error_naming_the_problem(
    limited_client: TestClient, sample: Sample, case: Case
) -> None:
    response = limited_client.request(**case.request(sample))

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"]
    for fragment in case.says(sample):
        assert fragment in response.json()["error"]


def test_405_names_the_allowed_methods_in_the_allow_header(limited_client: TestClient) -> None:
    response = limited_client.get("/predict")

    assert response.headers["allow"] == "POST"


def test_no_bad_request_moves_the_fingerprint_or_stops_the_service(
    limited_client: TestClient, sample: Sample, breast_cancer_artifact: Path
) -> None:
    before = limited_client.get("/bn-stats").json()
    good = limited_client.post("/predict", json={"instances": [sample.row]}).json()

    statuses = [limited_client.request(**case.request(sample)).status_code for case in CASES.values()]

    assert all(400 <= status < 500 for status in statuses)
    after = limited_client.get("/bn-stats").json()
    assert (
        after["fingerprint"] == before["fingerprint"] == manifest_of(breast_cancer_artifact)["bn_fingerprint"]
    )
    assert after["layers"] == before["layers"]
    assert limited_client.get("/readyz").status_code == 200
    assert limited_client.post("/predict", json={"instances": [sample.row]}).json() == good


def test_exactly_the_row_limit_is_accepted(limited_client: TestClient, sample: Sample) -> None:
    response = limited_client.post("/predict", json={"instances": [sample.row] * MAX_ROWS})

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == MAX_ROWS
