"""The page for people at / and the offline /docs and /redoc: everything they load comes from this server."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models import load_artifact
from models.history import read_history
from tests.models.tiny_nets import export, make_trained
from tests.service.serving import serving

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def _assets(html: str) -> list[str]:
    return ASSET.findall(html)


def test_the_page_loads_only_its_own_script_and_style(client: TestClient) -> None:
    for path in ("/", "/ui"):
        response = client.get(path)

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assets = _assets(response.text)
        assert "/static/page.js" in assets and "/static/page.css" in assets
        assert all(a.startswith("/") for a in assets), assets
    for asset in ("/static/page.js", "/static/page.css"):
        assert client.get(asset).status_code == 200
    script = client.get("/static/page.js").text
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "") and "https://" not in script


def test_docs_and_redoc_load_their_assets_from_this_server(client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assets = _assets(page.text)

        assert page.status_code == 200 and assets
        assert all(a.startswith("/docs-assets/") for a in assets), assets
        assert "fonts.googleapis" not in page.text and "cdn.jsdelivr" not in page.text
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset
    assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text


def test_history_answers_the_artifacts_recorded_curves(
    client: TestClient, breast_cancer_artifact: Path
) -> None:
    artifact = load_artifact(breast_cancer_artifact)
    recorded = read_history(artifact)
    assert recorded is not None

    answer = client.get("/history")

    assert answer.status_code == 200
    body = answer.json()
    assert (body["model"], body["artifact_sha256"]) == (artifact.manifest.name, artifact.weights_sha256)
    assert body["history"] == recorded.model_dump(mode="json")


def test_history_of_another_model_is_a_404_naming_the_served_one(client: TestClient) -> None:
    answer = client.get("/history", params={"model": "wine"})

    assert answer.status_code == 404
    assert "no model 'wine': this server serves 'breast_cancer'" in answer.json()["error"]


def test_an_artifact_without_a_history_answers_404_with_the_reason(tmp_path: Path) -> None:
    artifact_dir = export(make_trained("mlp_bn_before"), tmp_path / "old")

    with serving(artifact_dir) as client:
        answer = client.get("/history")
        page = client.get("/")

    assert answer.status_code == 404
    assert "has no training history" in answer.json()["error"]
    assert page.status_code == 200


def test_openapi_documents_the_history_response_and_leaves_the_pages_out(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    history = schema["paths"]["/history"]["get"]
    assert history["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "HistoryResponse"
    )
    assert {"404", "503"} <= history["responses"].keys()
    assert "TrainingHistory" in schema["components"]["schemas"]
    assert not {"/", "/ui", "/docs", "/redoc"} & schema["paths"].keys()


def test_readiness_announces_the_page(breast_cancer_artifact: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="bnserve"),
        serving(breast_cancer_artifact, port=8124) as client,
    ):
        announcement = caplog.text
        page = client.get("/")

    assert "page: http://127.0.0.1:8124/ " in announcement and page.status_code == 200
