"""The app's own /openapi.json, fuzzed by schemathesis: no 5xx, answers that conform to their documented
schemas and statuses, and no schema-valid request refused.

The checks are schemathesis's: ``not_a_server_error``, ``response_schema_conformance``,
``status_code_conformance`` (every status sent is documented) and ``positive_data_acceptance`` (a request
the schema allows is not refused with a 4xx). Examples are bounded so that this runs in seconds in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from service.http.app import create_app
from service.settings import Settings

EXAMPLES = 40  # per operation and generation mode: a few seconds in all
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, positive_data_acceptance]


@pytest.fixture(scope="module", params=["breast_cancer_artifact", "table_artifact"])
def fuzzed_app(request: pytest.FixtureRequest) -> Iterator[FastAPI]:
    """The app of the breast-cancer classifier, and of the mixed-table one (categories, booleans, missing
    values: the request schema and the drift report differ); schemathesis runs its lifespan (once) when it
    loads the schema."""
    artifact: Path = request.getfixturevalue(request.param)
    yield create_app(Settings(model_dir=artifact, device="cpu"))


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


def test_every_route_answers_as_its_openapi_schema_says(api_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /predict",
        "GET /bn-stats",
        "GET /drift",
        "GET /metadata",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def answers_as_documented(case: schemathesis.Case) -> None:
            excluded = []
            if case.media_type == "application/octet-stream":
                # A float32 body is valid when its length is a whole number of rows and its values are
                # finite: OpenAPI cannot say that of a byte string, so the other checks apply to random bytes.
                excluded = [positive_data_acceptance]
            elif case.operation.path.endswith("/infer"):
                # The Open Inference Protocol's request schema is the protocol's, the same for every model
                # (any tensor names and shapes); which tensors a model takes is in its metadata, not in
                # /openapi.json. Once the fuzzer hits the served model's name, a schema-valid body with other
                # tensors gets the documented 400 saying which are expected. The other checks still apply.
                excluded = [positive_data_acceptance]
            case.call_and_validate(checks=CHECKS, excluded_checks=excluded)

        answers_as_documented()


def test_the_schema_documents_the_404_of_an_unknown_bn_layer(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/bn-stats"]["get"]["responses"]

    assert client.get("/bn-stats", params={"layer": "no_such_layer"}).status_code == 404
    assert "404" in responses
    assert responses["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


def test_object_rows_with_an_unknown_key_are_refused_as_the_schema_says(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    row = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    array_row, object_row = row["properties"]["instances"]["items"]["anyOf"]
    names = client.get("/metadata").json()["feature_names"]

    assert object_row["additionalProperties"] is False and object_row["required"] == names
    assert array_row["minItems"] == array_row["maxItems"] == len(names)
    body = {"instances": [{**dict.fromkeys(names, 1.0), "not a feature": 1.0}]}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 422 and "unknown feature 'not a feature'" in answer.json()["error"]


def test_every_json_route_names_its_response_model(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in [
        ("/bn-stats", "get"), ("/metadata", "get"), ("/drift", "get"), ("/drift/reset", "post"),
        ("/healthz", "get"), ("/readyz", "get"), ("/predict", "post"),
    ]:  # fmt: skip
        ok = paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in ok, (path, ok)
