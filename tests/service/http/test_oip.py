"""The Open Inference Protocol routes in the app: the same numbers as /predict, the same forward passes, the
same drift monitor, and the protocol's status codes. (tritonclient itself: tests/service/http/test_tritonclient.py.)"""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient

from models import load_artifact
from tests.service.serving import manifest_of, rows_like_training, serving

HEADER_LENGTH = "Inference-Header-Content-Length"


def infer_body(rows: np.ndarray, outputs: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ],
        **extra,
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def binary_body(rows: np.ndarray, outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        }
    )
    return header + rows.astype("<f4").tobytes(), {HEADER_LENGTH: str(len(header))}


def outputs_of(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def binary_outputs(response: httpx.Response) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER_LENGTH])
    header, raw = orjson.loads(response.content[:length]), response.content[length:]
    out, offset = {}, 0
    for o in header["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = raw[offset : offset + size]
        offset += size
    assert offset == len(raw)
    return out


def model_name(client: TestClient) -> str:
    return str(client.get("/metadata").json()["name"])


def infer(client: TestClient, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/v2/models/{model_name(client)}/infer", content=content, headers=headers or {})


# ---------------------------------------------------------------------------------------------- health, metadata


def test_server_metadata_names_bnserve_and_the_binary_tensor_extension(client: TestClient) -> None:
    metadata = client.get("/v2").json()
    assert metadata["name"] == "bnserve" and "binary_tensor_data" in metadata["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_declares_the_oip_tensors_of_a_classifier(
    client: TestClient, breast_cancer_artifact: Path
) -> None:
    m = manifest_of(breast_cancer_artifact)
    metadata = client.get(f"/v2/models/{m['name']}").json()
    assert metadata["name"] == m["name"] and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "logits", "datatype": "FP32", "shape": [-1, 2]},
    ]
    assert client.get(f"/v2/models/{m['name']}/versions/1").json() == metadata


def test_model_metadata_of_a_regressor_and_a_cnn(
    diabetes_client: TestClient, digits_client: TestClient
) -> None:
    regressor = diabetes_client.get(f"/v2/models/{model_name(diabetes_client)}").json()
    assert regressor["outputs"] == [{"name": "value", "datatype": "FP32", "shape": [-1, 1]}]
    cnn = digits_client.get(f"/v2/models/{model_name(digits_client)}").json()
    assert cnn["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert cnn["outputs"][0]["shape"] == [-1, 10]


def test_unknown_model_or_version_is_a_404_naming_what_is_served(client: TestClient) -> None:
    name = model_name(client)
    for path in ("/v2/models/nope", "/v2/models/nope/ready", f"/v2/models/{name}/versions/2"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert name in response.json()["error"]
    response = client.post("/v2/models/nope/infer", content=orjson.dumps(infer_body(np.zeros((1, 30)))))
    assert response.status_code == 404 and f"this server serves {name!r}" in response.json()["error"]
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert client.get(f"/v2/models/{name}/versions/1/ready").json() == {"name": name, "ready": True}


def test_a_refused_artifact_is_live_but_not_ready_and_infer_is_a_503(tmp_path: Path) -> None:
    with serving(tmp_path / "missing") as client:
        assert client.get("/v2/health/live").status_code == 200
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and "not ready" in ready.json()["error"]
        assert client.get("/v2/models/anything").status_code == 503
        assert client.get("/v2/models/anything/ready").status_code == 503
        response = client.post("/v2/models/anything/infer", content=b"{}")
        assert response.status_code == 503 and "error" in response.json()


def test_model_name_setting_serves_the_model_under_another_name(breast_cancer_artifact: Path) -> None:
    with serving(breast_cancer_artifact, model_name="breast-cancer") as client:
        assert client.get("/v2/models/breast-cancer").json()["name"] == "breast-cancer"
        assert client.get("/v2/models/breast_cancer").status_code == 404
        response = client.post(
            "/v2/models/breast-cancer/infer", content=orjson.dumps(infer_body(rows_like_training(client, 1)))
        )
        assert response.json()["model_name"] == "breast-cancer"


# ---------------------------------------------------------------------------------------------- same numbers


@pytest.mark.parametrize("which", ["client", "digits_client", "diabetes_client"])
def test_oip_json_answers_are_bit_identical_to_predicts(which: str, request: pytest.FixtureRequest) -> None:
    client: TestClient = request.getfixturevalue(which)
    rows = rows_like_training(client, 7, seed=3)
    predictions = client.post("/predict", json={"instances": rows.tolist()}).json()["predictions"]
    outputs = outputs_of(infer(client, infer_body(rows)))
    if "value" in outputs:
        assert outputs["value"]["shape"] == [7, 1]
        assert outputs["value"]["data"] == [p["value"] for p in predictions]
        return
    labels = client.get("/metadata").json()["class_labels"]
    assert outputs["label"]["data"] == [p["label"] for p in predictions]
    assert outputs["probabilities"]["shape"] == [7, len(labels)]
    assert outputs["probabilities"]["data"] == [
        p["probabilities"][label] for p in predictions for label in labels
    ]


def test_oip_binary_answer_is_the_predict_bulk_answer_byte_for_byte(client: TestClient) -> None:
    rows = rows_like_training(client, 300, seed=4)
    bulk = client.post(
        "/predict",
        content=rows.tobytes(),
        headers={"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"},
    )
    body, headers = binary_body(rows, ["probabilities"])
    assert binary_outputs(infer(client, body, headers))["probabilities"] == bulk.content


def test_no_content_type_json_and_octet_stream_are_read_alike_and_others_are_a_415(
    client: TestClient,
) -> None:
    rows = rows_like_training(client, 2, seed=5)
    body, headers = binary_body(rows, ["probabilities"])
    answers = {
        content_type: infer(
            client, body, {**headers, **({"Content-Type": content_type} if content_type else {})}
        )
        for content_type in (
            "",
            "application/json",
            "application/octet-stream",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",  # what curl -d sends
        )
    }
    assert len({a.content for a in answers.values()}) == 1 and answers[""].status_code == 200
    refused = infer(client, body, {**headers, "Content-Type": "text/plain"})
    assert refused.status_code == 415 and "application/octet-stream" in refused.json()["error"]


def test_one_tensor_per_feature_gives_the_same_answer_as_the_input_tensor(
    client: TestClient, breast_cancer_artifact: Path
) -> None:
    rows = rows_like_training(client, 3, seed=6)
    features = manifest_of(breast_cancer_artifact)["feature_names"]
    per_feature = {
        "inputs": [
            {"name": name, "shape": [3, 1] if j % 2 else [3], "datatype": "FP64", "data": rows[:, j].tolist()}
            for j, name in reversed(list(enumerate(features)))
        ]
    }
    assert infer(client, per_feature).json() == infer(client, infer_body(rows)).json()


def test_logits_on_request_are_the_unfolded_networks_outputs(
    client: TestClient, breast_cancer_artifact: Path
) -> None:
    rows = rows_like_training(client, 5, seed=7)
    outputs = outputs_of(infer(client, infer_body(rows, ["logits", "probabilities"], id="abc")))
    assert list(outputs) == ["logits", "probabilities"]
    logits = np.array(outputs["logits"]["data"], dtype=np.float32).reshape(5, 2)
    with torch.inference_mode():
        expected = load_artifact(breast_cancer_artifact).model(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(5, 2)
    np.testing.assert_allclose(probabilities, torch.softmax(torch.from_numpy(logits), 1).numpy(), atol=1e-6)
    assert infer(client, infer_body(rows, ["label"], id="abc")).json()["id"] == "abc"


def test_a_gzip_body_is_read_like_a_plain_one(client: TestClient) -> None:
    body = orjson.dumps(infer_body(rows_like_training(client, 2, seed=8)))
    plain = infer(client, body)
    zipped = infer(client, gzip.compress(body), {"Content-Encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.content == plain.content
    assert infer(client, body, {"Content-Encoding": "br"}).status_code == 415
    assert infer(client, gzip.compress(body)[:-10], {"Content-Encoding": "gzip"}).status_code == 400


# ---------------------------------------------------------------------------------------------- shared machinery


def test_oip_and_predict_requests_are_merged_into_the_same_forward_pass(breast_cancer_artifact: Path) -> None:
    sizes = {"oip": [2, 3], "predict": [1, 4]}
    total = sum(sum(s) for s in sizes.values())
    # A batch runs once it is full; until then (an hour) it waits: only merging can complete these requests.
    with serving(breast_cancer_artifact, max_batch_rows=total, max_wait_ms=3_600_000) as client:
        name = model_name(client)
        rows = rows_like_training(client, total, seed=9)
        parts = np.split(rows, np.cumsum([*sizes["oip"], *sizes["predict"]])[:-1])

        async def post_all() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bnserve", timeout=60) as http:
                oip = [
                    http.post(f"/v2/models/{name}/infer", content=orjson.dumps(infer_body(p)))
                    for p in parts[:2]
                ]
                predict = [http.post("/predict", json={"instances": p.tolist()}) for p in parts[2:]]
                return await asyncio.wait_for(asyncio.gather(*oip, *predict), 60)

        assert client.portal is not None
        responses = client.portal.call(post_all)
        assert all(r.status_code == 200 for r in responses)
        metrics = client.get("/metrics").text
    assert re.search(r"^bnserve_batch_rows_count(\{[^}]*\})? 1\.0$", metrics, re.M), "one forward pass"
    assert re.search(rf"^bnserve_batch_rows_sum(\{{[^}}]*\}})? {float(total)}$", metrics, re.M)


def test_oip_rows_reach_the_drift_monitor_and_bad_requests_change_nothing(
    breast_cancer_artifact: Path,
) -> None:
    with serving(breast_cancer_artifact) as client:
        before = client.get("/drift").json()["rows_seen"]
        bn_before = client.get("/bn-stats").json()
        assert infer(client, infer_body(rows_like_training(client, 6))).status_code == 200
        assert client.get("/drift").json()["rows_seen"] == before + 6
        nan_row = rows_like_training(client, 2)
        nan_row[1, 3] = np.nan
        body, headers = binary_body(nan_row, ["probabilities"])
        refused = infer(client, body, headers)
        assert refused.status_code == 400 and "finite" in refused.json()["error"]
        assert client.get("/drift").json()["rows_seen"] == before + 6
        assert client.get("/bn-stats").json()["fingerprint"] == bn_before["fingerprint"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{", {}, 400, "malformed JSON"),
        (
            orjson.dumps(
                {"inputs": [{"name": "input", "shape": [1, 29], "datatype": "FP32", "data": [0.0] * 29}]}
            ),
            {},
            400,
            "[B, 30]",
        ),
        (
            orjson.dumps(
                {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30}]}
            ),
            {},
            400,
            "datatype BYTES",
        ),
        (orjson.dumps(infer_body(np.zeros((1, 30)), ["value"])), {}, 400, "unknown output 'value'"),
        (b'{"inputs":[]}', {HEADER_LENGTH: "9999"}, 400, "only 13 bytes"),
        (orjson.dumps(infer_body(np.zeros((5000, 30)))), {}, 413, "at most 4096 rows"),
    ],
)
def test_bad_inference_requests_get_the_protocols_4xx_with_an_error_message(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    response = infer(client, body, headers)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_infer_requests_are_counted_under_their_route_template(client: TestClient) -> None:
    name = model_name(client)
    client.post(
        f"/v2/models/{name}/versions/1/infer", content=orjson.dumps(infer_body(rows_like_training(client, 1)))
    )
    metrics = client.get("/metrics").text
    assert re.search(r'route="/v2/models/\{model}/versions/\{version}/infer"', metrics)
    assert client.get(f"/v2/models/{name}/infer").status_code == 405


def test_openapi_documents_the_oip_routes_with_their_schemas(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v2",
        "/v2/health/ready",
        "/v2/models/{model}",
        "/v2/models/{model}/versions/{version}/infer",
    ):
        assert path in paths, path
    infer_op = paths["/v2/models/{model}/infer"]["post"]
    assert infer_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceResponse"
    }
    assert {"InferenceRequest", "InferenceResponse", "ModelMetadata", "ServerMetadata"} <= set(
        schema["components"]["schemas"]
    )
