"""The app as a user first meets it: the quick-start lines at readiness, and the OpenAPI docs at /docs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.serving import manifest_of, serving


def test_readiness_announces_the_url_and_ready_to_paste_curl_lines(
    breast_cancer_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="bnserve"),
        serving(breast_cancer_artifact, port=8123) as client,
    ):
        announcement = caplog.text
        pasted_body = re.search(r"curl -s http://127\.0\.0\.1:8123/predict .* -d '(.+)'", announcement)
        assert pasted_body is not None, announcement
        response = client.post(
            "/predict", content=pasted_body.group(1), headers={"Content-Type": "application/json"}
        )

    assert "http://127.0.0.1:8123" in announcement
    assert "curl -s 'http://127.0.0.1:8123/bn-stats" in announcement
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_nothing_is_announced_for_an_artifact_that_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bnserve"), serving(tmp_path / "nowhere"):
        pass

    assert "curl" not in caplog.text
    assert "NOT ready" in caplog.text


def test_openapi_documents_the_predict_request_body_with_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    body = spec["paths"]["/predict"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert body["required"] is True
    assert schema["required"] == ["instances"]
    example_instances = schema["properties"]["instances"]["examples"][0]
    assert isinstance(example_instances, list) and len(example_instances) >= 1


def test_the_docs_example_request_predicts_with_the_breast_cancer_model(
    client: TestClient, breast_cancer_artifact: Path
) -> None:
    spec = client.get("/openapi.json").json()
    example_instances = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["properties"]["instances"]["examples"][0]

    response = client.post("/predict", json={"instances": example_instances})

    assert len(example_instances[0]) == len(manifest_of(breast_cancer_artifact)["feature_names"])
    assert response.status_code == 200


def test_openapi_documents_the_predict_answer_and_its_errors_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    responses = spec["paths"]["/predict"]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    assert (
        responses["200"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/PredictResponse"
    )
    assert schemas["PredictResponse"]["examples"][0]["predictions"][0]["label"]
    for status in ("400", "413", "415", "422", "503"):
        assert (
            responses[status]["content"]["application/json"]["schema"]["$ref"]
            == "#/components/schemas/ErrorResponse"
        )
    assert schemas["ErrorResponse"]["properties"]["error"]["examples"]


def test_docs_page_is_served(client: TestClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text
