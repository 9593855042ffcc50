"""A model trained on a mixed CSV serves raw rows: strings for categories, null for missing values, object or
array rows; its answers equal the numpy reference of docs/ARTIFACT.md; bad values are 4xx naming row and feature."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.service.serving import serving

ARTIFACT_MD = Path(__file__).parents[3] / "docs" / "ARTIFACT.md"
FEATURES = ["age", "plan", "region", "member", "income", "country"]
ROW: dict[str, Any] = {
    "age": 38.5,
    "plan": "plus",
    "region": "north",
    "member": True,
    "income": 21000.0,
    "country": "DE",
}


@pytest.fixture(scope="module")
def table_client(table_artifact: Path, runtime: str) -> Iterator[TestClient]:
    """Serves the mixed-CSV model on each runtime (tests/service/conftest.py): both encode the raw rows."""
    with serving(table_artifact, runtime=runtime, drift_min_rows=50, drift_window=400) as client:
        yield client


@pytest.fixture(scope="module")
def reference() -> SimpleNamespace:
    (code,) = re.findall(r"^```python\n(.*?)^```$", ARTIFACT_MD.read_text(), flags=re.DOTALL | re.MULTILINE)
    namespace: dict[str, object] = {"__name__": "artifact_reference"}
    exec(compile(code, str(ARTIFACT_MD), "exec"), namespace)
    return SimpleNamespace(**namespace)


def probabilities(client: TestClient, rows: list[Any]) -> np.ndarray:
    r = client.post("/predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    return np.array([[p["probabilities"][c] for c in ("no", "yes")] for p in r.json()["predictions"]])


def row(**changes: Any) -> dict[str, Any]:
    return ROW | changes


def test_object_and_array_rows_get_the_numpy_reference_answers(
    table_client: TestClient, table_artifact: Path, reference: SimpleNamespace
) -> None:
    rows = [row(), row(plan="basic", member=False), row(age=None, plan=None, member=None, income="NA"),
            row(plan="  pro ", region="?", member="no")]  # fmt: skip
    manifest, tensors = reference.load(table_artifact)
    _, expected = reference.predict(
        manifest, reference.forward(manifest, tensors, [[r[f] for f in FEATURES] for r in rows])
    )
    got_objects = probabilities(table_client, rows)
    got_arrays = probabilities(table_client, [[r[f] for f in FEATURES] for r in rows])
    np.testing.assert_allclose(got_objects, expected, atol=1e-5)
    np.testing.assert_array_equal(got_objects, got_arrays)


def test_an_unseen_category_is_answered_as_the_pooled_rare_categories(table_client: TestClient) -> None:
    unseen, pooled, known = probabilities(
        table_client, [row(plan="enterprise"), row(plan="legacy"), row(plan="pro")]
    )
    np.testing.assert_allclose(unseen, pooled, rtol=0, atol=1e-6)  # both go to plan=<other>
    assert np.abs(unseen - known).max() > 1e-3


def test_a_missing_value_is_answered_with_the_training_fill_and_its_indicator(
    table_client: TestClient, table_artifact: Path, reference: SimpleNamespace
) -> None:
    manifest, _ = reference.load(table_artifact)
    median = manifest["preprocessing"]["features"][0]["fill"]
    missing, at_median = probabilities(table_client, [row(age=None), row(age=median)])
    assert np.abs(missing - at_median).max() > 1e-4  # the indicator column tells them apart
    np.testing.assert_allclose(missing, probabilities(table_client, [row(age="NA")])[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row(plan=3), r"expected a category \(a string, or null when missing\) for categorical feature 'plan' at row 1, got the number 3"),
        (row(age="old"), r"expected a number \(or null when missing\) for numeric feature 'age' at row 1, got the string 'old'"),
        (row(member="maybe"), r"expected true or false .* for boolean feature 'member' at row 1, got the string 'maybe'"),
        (row(colour="red"), r"unknown feature 'colour' at row 1"),
        ({k: v for k, v in ROW.items() if k != "region"}, r"missing feature 'region' at row 1"),
        ([1.0, "plus"], r"expected 6 features, got 2 at row 1"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_kind_is_a_422_naming_the_row_and_the_feature(
    table_client: TestClient, bad: Any, message: str
) -> None:
    r = table_client.post("/predict", json={"instances": [ROW, bad]})
    assert r.status_code == 422
    assert re.search(message, r.json()["error"]), r.json()["error"]


def test_a_float32_body_is_refused_for_a_model_with_categories(table_client: TestClient) -> None:
    body = np.zeros((1, 6), dtype="<f4").tobytes()
    r = table_client.post("/predict", content=body, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 422 and "categorical features" in r.json()["error"]


def test_metadata_lists_each_feature_with_its_type_categories_and_missing_handling(
    table_client: TestClient,
) -> None:
    features = {f["name"]: f for f in table_client.get("/metadata").json()["features"]}
    assert [features[n]["type"] for n in FEATURES] == [
        "numeric", "categorical", "categorical", "boolean", "numeric", "categorical",
    ]  # fmt: skip
    plan = features["plan"]
    assert sorted(plan["categories"]) == ["basic", "plus", "pro", "team"]
    assert "plan=<other>" in plan["unseen"] and "plan=<missing>" in plan["missing"]
    assert "training median" in features["age"]["missing"] and "age:missing" in features["age"]["missing"]
    assert features["country"]["input_columns"] == ["country=DE"]


def test_drift_reports_category_frequencies_and_missing_rates_against_training(
    table_client: TestClient,
) -> None:
    table_client.post("/drift/reset")
    regions = ["north", "south", "east", "west"] * 25
    like_training = [
        row(plan=p, region=r, member=m)
        for p, r, m in zip(
            ["basic", "plus", "pro", "team"] * 25, regions[1:] + regions[:1], [True, False] * 50, strict=True
        )
    ]
    table_client.post("/predict", json={"instances": like_training})
    before = {f["name"]: f for f in table_client.get("/drift").json()["raw_features"]["features"]}
    table_client.post("/drift/reset")
    shifted = [
        row(plan="enterprise", age=None, region=r) for r in regions
    ]  # unseen plans, age always missing
    table_client.post("/predict", json={"instances": shifted})
    report = table_client.get("/drift").json()
    after = {f["name"]: f for f in report["raw_features"]["features"]}
    assert before["plan"]["verdict"] == "ok" and before["plan"]["psi"] < 0.25 < after["plan"]["psi"]
    assert after["plan"]["verdict"] == "drift" and after["plan"]["frequencies"]["<other>"]["live"] == 1.0
    assert after["age"]["missing_rate"] == 1.0 and after["age"]["verdict"] == "drift"
    assert after["region"]["verdict"] == "ok"
    assert report["verdict"] == "drift" and report["alert"] is True
    metrics = table_client.get("/metrics").text
    assert re.search(r'bnserve_feature_psi\{feature="plan",model="customers",version="1"\} [0-9.]+', metrics)
    assert 'bnserve_feature_missing_rate{feature="age",model="customers",version="1"} 1.0' in metrics


def test_bn_stats_names_the_input_columns_the_preprocessing_makes(table_client: TestClient) -> None:
    view = table_client.get("/bn-stats").json()["input_standardization"]
    assert view["feature_names"][:4] == ["age", "age:missing", "plan=basic", "plan=plus"]
    assert len(view["feature_names"]) == len(view["mean"]) == 17


def infer(client: TestClient, inputs: list[dict[str, Any]], **kwargs: Any) -> Any:
    return client.post("/v2/models/customers/infer", json={"inputs": inputs}, **kwargs)


def per_feature_tensors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    datatypes = {
        "age": "FP32",
        "plan": "BYTES",
        "region": "BYTES",
        "member": "BOOL",
        "income": "FP32",
        "country": "BYTES",
    }
    return [
        {"name": f, "datatype": datatypes[f], "shape": [len(rows)], "data": [r[f] for r in rows]}
        for f in FEATURES
    ]


def test_the_inference_protocol_takes_one_tensor_per_feature_bytes_for_categories(
    table_client: TestClient,
) -> None:
    rows = [row(), row(plan="enterprise", age=None, member=None), row(region="?", income=None)]
    r = infer(table_client, per_feature_tensors(rows))
    assert r.status_code == 200, r.text
    (probabilities,) = [o for o in r.json()["outputs"] if o["name"] == "probabilities"]
    got = np.array(probabilities["data"]).reshape(3, 2)
    np.testing.assert_allclose(got, probabilities_of(table_client, rows), rtol=0, atol=1e-6)


def probabilities_of(client: TestClient, rows: list[dict[str, Any]]) -> np.ndarray:
    labels = client.get("/metadata").json()["class_labels"]
    r = client.post("/predict", json={"instances": rows})
    return np.array([[p["probabilities"][c] for c in labels] for p in r.json()["predictions"]])


def test_binary_bytes_tensors_read_as_their_json_form(table_client: TestClient) -> None:
    rows = [row(), row(plan="pro", region="south")]
    tensors = per_feature_tensors(rows)
    plan = next(t for t in tensors if t["name"] == "plan")
    payload = b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in plan.pop("data"))
    plan["parameters"] = {"binary_data_size": len(payload)}
    header = orjson.dumps({"inputs": tensors})
    r = table_client.post(
        "/v2/models/customers/infer",
        content=header + payload,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    (probabilities,) = [o for o in r.json()["outputs"] if o["name"] == "probabilities"]
    np.testing.assert_allclose(
        np.array(probabilities["data"]).reshape(2, 2), probabilities_of(table_client, rows), atol=1e-6
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "plan", "datatype": "FP32", "data": [1.0]}, r"input 'plan': a categorical feature takes datatype BYTES"),
        ({"name": "plan", "data": [3]}, r"categorical feature 'plan' at row 0, got the number 3"),
        ({"name": "age", "data": ["old"]}, r"numeric feature 'age' at row 0, got the string 'old'"),
    ],
)  # fmt: skip
def test_a_tensor_of_the_wrong_kind_is_a_400_naming_the_feature(
    table_client: TestClient, change: dict[str, Any], message: str
) -> None:
    tensors = [t | change if t["name"] == change["name"] else t for t in per_feature_tensors([row()])]
    r = infer(table_client, tensors)
    assert r.status_code == 400 and re.search(message, r.json()["error"]), r.text


def test_one_fp32_input_tensor_is_refused_for_a_model_with_categories(table_client: TestClient) -> None:
    r = infer(table_client, [{"name": "input", "datatype": "FP32", "shape": [1, 6], "data": [0.0] * 6}])
    assert r.status_code == 400 and "categorical features" in r.json()["error"]


def test_the_model_metadata_lists_a_tensor_per_feature(table_client: TestClient) -> None:
    inputs = table_client.get("/v2/models/customers").json()["inputs"]
    assert [(t["name"], t["datatype"]) for t in inputs] == [
        ("age", "FP32"), ("plan", "BYTES"), ("region", "BYTES"), ("member", "BOOL"), ("income", "FP32"), ("country", "BYTES"),
    ]  # fmt: skip
