"""The repository over HTTP, in process: routing by model and version, GET /models, the OIP repository API,
rollback and unload, per-version views, drift windows and metrics, the admin and read tokens, and names
that try to leave the repository."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.http.app import create_app
from service.settings import Settings
from training import TrainConfig, train

TOKEN = "admin-token-for-tests"
READ_TOKEN = "read-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bc/1`` and ``bc/2`` (two seeds: different weights) and ``iris/1``; copied before any test edits it."""
    repo = tmp_path_factory.mktemp("trained-repo")
    quick = {"epochs": 1, "hidden": (16,), "device": "cpu", "progress": False, "repository": str(repo)}
    for seed in (0, 1):
        train(TrainConfig(dataset="breast_cancer", name="bc", seed=seed, **quick))  # type: ignore[arg-type]
    train(TrainConfig(dataset="iris", name="iris", **quick))  # type: ignore[arg-type]
    return repo


@pytest.fixture
def repo(trained_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_repo, tmp_path / "repo"))


def serve(repo: Path, **settings: object) -> TestClient:
    options = {"repository": repo, "device": "cpu", "admin_token": TOKEN, "default_model": "bc", **settings}
    return TestClient(create_app(Settings(**options)))  # type: ignore[arg-type]


@pytest.fixture
def client(repo: Path, runtime: str) -> Iterator[TestClient]:
    """The repository served by each runtime in turn (the ``runtime`` fixture of tests/service/conftest.py)."""
    with serve(repo, runtime=runtime) as client:
        assert client.get("/metadata").json()["serving"]["runtime"] == runtime
        yield client


def row(client: TestClient, model: str = "bc") -> list[float]:
    """Gives back a canary input row of ``model`` (every version of it takes the same features)."""
    repo: Path = client.app.state.settings.repository  # type: ignore[attr-defined]
    manifest = orjson.loads((repo / model / "1" / "manifest.json").read_bytes())
    return manifest["canary"]["inputs"][0]  # type: ignore[no-any-return]


def sha(repo: Path, model: str, version: int) -> str:
    return hashlib.sha256((repo / model / str(version) / "weights.safetensors").read_bytes()).hexdigest()


def predict(client: TestClient, model: str | None = None, version: str | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    params = {k: v for k, v in (("model", model), ("version", version)) if v is not None}
    return client.post(
        "/predict",
        params=params,
        json={"instances": [row(client, model if model in ("bc", "iris") else "bc")]},
        **kwargs,
    )  # type: ignore[arg-type]


def test_models_lists_every_model_and_version_with_its_state_and_the_default(
    client: TestClient, repo: Path
) -> None:
    answer = client.get("/models").json()

    assert answer["default"] == "bc"
    by_name = {m["name"]: m["versions"] for m in answer["models"]}
    assert [(v["version"], v["state"]) for v in by_name["bc"]] == [("1", "UNAVAILABLE"), ("2", "READY")]
    assert by_name["bc"][1]["artifact_sha256"] == sha(repo, "bc", 2)
    assert "latest 1" in by_name["bc"][0]["reason"]
    assert [(v["version"], v["state"]) for v in by_name["iris"]] == [("1", "READY")]


def test_predict_serves_the_default_model_and_any_model_by_name_and_says_which(
    client: TestClient, repo: Path
) -> None:
    default = predict(client).json()
    iris = predict(client, "iris").json()

    assert (default["model"], default["version"], default["artifact_sha256"]) == (
        "bc",
        "2",
        sha(repo, "bc", 2),
    )
    assert (iris["model"], iris["version"]) == ("iris", "1")
    assert set(iris["predictions"][0]["probabilities"]) == {"setosa", "versicolor", "virginica"}


def test_the_bulk_answer_names_model_version_and_artifact_in_its_headers(
    client: TestClient, repo: Path
) -> None:
    answer = predict(client, "bc", "2", headers={"Accept": "application/octet-stream"})

    assert answer.status_code == 200
    assert answer.headers["x-bnserve-model"] == "bc" and answer.headers["x-bnserve-version"] == "2"
    assert answer.headers["x-bnserve-artifact-sha256"] == sha(repo, "bc", 2)


def test_a_version_the_policy_does_not_serve_is_a_404_that_says_why(client: TestClient) -> None:
    answer = predict(client, "bc", "1")

    assert answer.status_code == 404
    assert "UNAVAILABLE" in answer.json()["error"] and "latest 1" in answer.json()["error"]


def test_each_version_answers_its_own_views_and_drift_window(repo: Path) -> None:
    (repo / "bc" / "config.json").write_text('{"version_policy": {"all": {}}}')
    with serve(repo) as client:
        for _ in range(3):
            assert predict(client, "bc", "2").status_code == 200
        for version in ("1", "2"):
            q = {"model": "bc", "version": version}
            stats, meta, drift = (
                client.get(path, params=q).json() for path in ("/bn-stats", "/metadata", "/drift")
            )
            assert stats["version"] == meta["version"] == drift["version"] == version
            assert (
                stats["artifact_sha256"]
                == meta["artifact_sha256"]
                == drift["artifact_sha256"]
                == sha(repo, "bc", int(version))
            )
            assert drift["rows"] == (3 if version == "2" else 0)
        assert client.post("/drift/reset", params={"model": "bc", "version": "2"}).status_code == 401
        reset = client.post("/drift/reset", params={"model": "bc", "version": "2"}, headers=AUTH).json()
        assert (reset["version"], reset["reset"]) == ("2", True)


def test_a_new_version_starts_a_new_drift_window_and_its_own_series(repo: Path) -> None:
    with serve(repo) as client:
        assert predict(client).status_code == 200
        assert client.get("/drift").json()["rows"] == 1
        shutil.copytree(repo / "bc" / "1", repo / "bc" / "3")
        assert client.post("/v2/repository/models/bc/load", headers=AUTH).status_code == 200

        assert client.get("/drift").json()["version"] == "3" and client.get("/drift").json()["rows"] == 0
        assert predict(client).json()["version"] == "3"
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for s in family.samples
        }
        assert samples[("bnserve_predict_rows_count", (("model", "bc"), ("version", "3")))] == 1
        assert samples[("bnserve_predict_rows_count", (("model", "bc"), ("version", "2")))] == 1
        info = {labels: v for (name, labels), v in samples.items() if name == "bnserve_model_info"}
        assert {dict(k)["version"]: v for k, v in info.items() if dict(k)["model"] == "bc"} == {
            "2": 0.0,
            "3": 1.0,
        }
        assert (("model", "bc"), ("version", "3")) in {
            k[1] for k in samples if k[0] == "bnserve_drift_window_rows"
        }


def test_rollback_unload_and_load_again_over_http(client: TestClient) -> None:
    rollback = client.post(
        "/v2/repository/models/bc/load", json={"parameters": {"version": "1"}}, headers=AUTH
    )
    assert rollback.status_code == 200 and rollback.json()["serving"] == ["1"]
    assert predict(client).json()["version"] == "1"

    unloaded = client.post("/v2/repository/models/bc/unload", headers=AUTH)
    assert unloaded.status_code == 200 and unloaded.json()["serving"] == []
    assert predict(client).status_code == 503
    assert predict(client, "iris").status_code == 200  # the other model is untouched

    again = client.post("/v2/repository/models/bc/load", headers=AUTH)
    assert again.status_code == 200 and again.json()["serving"] == ["2"]
    assert predict(client).json()["version"] == "2"


def test_the_index_lists_states_and_reasons_and_can_list_only_ready_ones(client: TestClient) -> None:
    index = client.post("/v2/repository/index", headers=AUTH, json={}).json()
    ready = client.post("/v2/repository/index", headers=AUTH, json={"ready": True}).json()

    assert {(e["name"], e["version"], e["state"]) for e in index} == {
        ("bc", "1", "UNAVAILABLE"),
        ("bc", "2", "READY"),
        ("iris", "1", "READY"),
    }
    assert all(e["reason"] for e in index)
    assert {(e["name"], e["version"]) for e in ready} == {("bc", "2"), ("iris", "1")}


def test_loading_a_version_that_fails_verification_is_a_400_and_the_serving_one_keeps_serving(
    client: TestClient, repo: Path
) -> None:
    shutil.copytree(repo / "bc" / "1", repo / "bc" / "3")
    (repo / "bc" / "3" / "manifest.sha256").write_text("0" * 64 + "  manifest.json\n")

    answer = client.post("/v2/repository/models/bc/load", headers=AUTH)

    assert answer.status_code == 400 and "manifest.sha256" in answer.json()["error"]
    assert predict(client).json()["version"] == "2"
    assert client.get("/readyz").status_code == 200
    versions = {v["version"]: v for v in client.get("/models").json()["models"][0]["versions"]}
    assert versions["3"]["state"] == "UNAVAILABLE" and "manifest.sha256" in versions["3"]["reason"]
    assert (
        versions["2"]["state"] == "READY" and "in place of refused version(s) [3]" in versions["2"]["reason"]
    )


ADMIN_CALLS = [
    ("/v2/repository/index", {}),
    ("/v2/repository/models/bc/load", {}),
    ("/v2/repository/models/iris/unload", {}),
    ("/drift/reset", {}),
]


@pytest.mark.parametrize(("path", "body"), ADMIN_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer ", "Bearer", f"Basic {TOKEN}", f"Bearer {TOKEN}x"],
    ids=["missing", "wrong", "empty", "no-token", "other-scheme", "longer"],
)
def test_every_state_changing_endpoint_refuses_a_missing_wrong_or_empty_token(
    client: TestClient, path: str, body: dict[str, object], authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}

    answer = client.post(path, json=body, headers=headers)

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "expected 'Authorization: Bearer" in answer.json()["error"]
    assert TOKEN not in answer.text


@pytest.mark.parametrize(("path", "body"), ADMIN_CALLS)
def test_every_state_changing_endpoint_accepts_the_right_token(
    client: TestClient, path: str, body: dict[str, object]
) -> None:
    assert client.post(path, json=body, headers=AUTH).status_code == 200


@pytest.mark.parametrize(("path", "body"), ADMIN_CALLS)
def test_with_no_admin_token_configured_state_changing_endpoints_answer_403_saying_how_to_enable_them(
    repo: Path, path: str, body: dict[str, object]
) -> None:
    with serve(repo, admin_token=None) as client:
        answer = client.post(path, json=body, headers={"Authorization": "Bearer anything"})

    assert answer.status_code == 403 and "set BNSERVE_ADMIN_TOKEN" in answer.json()["error"]


READ_CALLS = [
    ("POST", "/predict"),
    ("GET", "/models"),
    ("GET", "/metadata"),
    ("GET", "/bn-stats"),
    ("GET", "/drift"),
    ("GET", "/metrics"),
]


def test_a_read_token_closes_inference_and_the_views_but_not_the_probes(repo: Path) -> None:
    with serve(repo, read_token=READ_TOKEN) as client:
        for method, path in READ_CALLS:
            kwargs = {"json": {"instances": [row(client)]}} if method == "POST" else {}
            refused = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            for token in (READ_TOKEN, TOKEN):
                allowed = client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)  # type: ignore[arg-type]
                assert allowed.status_code == 200, (path, allowed.text)
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_without_a_read_token_inference_and_the_views_are_open(client: TestClient) -> None:
    for method, path in READ_CALLS:
        kwargs = {"json": {"instances": [row(client)]}} if method == "POST" else {}
        assert client.request(method, path, **kwargs).status_code == 200, path  # type: ignore[arg-type]


BAD_MODELS = ["..", "../iris", "/etc", "bc/../iris", ".hidden", "a\\b", "%2e%2e"]
BAD_VERSIONS = ["..", "../2", "0", "02", "-1", "2/..", "/2"]


@pytest.mark.parametrize("model", BAD_MODELS)
def test_model_names_leaving_the_repository_are_a_400_on_every_endpoint_that_takes_one(
    client: TestClient, model: str
) -> None:
    answers = [
        predict(client, model),
        *(client.get(path, params={"model": model}) for path in ("/bn-stats", "/metadata", "/drift")),
        client.post("/drift/reset", params={"model": model}, headers=AUTH),
        client.post(f"/v2/repository/models/{quote(model, safe='').replace('.', '%2E')}/load", headers=AUTH),
        client.post(
            f"/v2/repository/models/{quote(model, safe='').replace('.', '%2E')}/unload", headers=AUTH
        ),
    ]

    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text)
        assert "model name" in answer.json()["error"]


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_version_names_that_are_not_positive_integers_are_a_400_on_every_endpoint_that_takes_one(
    client: TestClient, version: str
) -> None:
    answers = [
        predict(client, "bc", version),
        *(
            client.get(path, params={"model": "bc", "version": version})
            for path in ("/bn-stats", "/metadata", "/drift")
        ),
        client.post("/drift/reset", params={"model": "bc", "version": version}, headers=AUTH),
        client.post("/v2/repository/models/bc/load", json={"parameters": {"version": version}}, headers=AUTH),
        client.post(
            "/v2/repository/models/bc/load", json={"parameters": {"versions": ["2", version]}}, headers=AUTH
        ),
        client.post(
            "/v2/repository/models/bc/unload", json={"parameters": {"version": version}}, headers=AUTH
        ),
    ]

    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text)
        assert "version" in answer.json()["error"]
    assert predict(client).json()["version"] == "2"  # nothing changed


def test_a_version_linked_from_outside_the_repository_is_refused_and_the_index_says_why(
    repo: Path, tmp_path: Path
) -> None:
    outside = Path(shutil.copytree(repo / "bc" / "1", tmp_path / "outside"))
    (repo / "bc" / "3").symlink_to(outside)
    with serve(repo) as client:
        versions = {v["version"]: v for v in client.get("/models").json()["models"][0]["versions"]}
        assert versions["3"]["state"] == "UNAVAILABLE" and "outside the repository" in versions["3"]["reason"]
        assert predict(client).json()["version"] == "2"


def test_a_single_artifact_is_served_as_version_1_of_a_one_model_repository(
    breast_cancer_artifact: Path,
) -> None:
    with TestClient(create_app(Settings(model_dir=breast_cancer_artifact, device="cpu"))) as client:
        models = client.get("/models").json()
        answer = client.post("/predict", json={"instances": [[0.0] * 30]}).json()

    assert models["default"] == "breast_cancer"
    assert [(v["version"], v["state"]) for v in models["models"][0]["versions"]] == [("1", "READY")]
    assert (answer["model"], answer["version"]) == ("breast_cancer", "1")


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"parameters": []}', b'{"parameters": {"version": "1", "versions": ["1"]}}', b"[1]"],
)
def test_a_malformed_load_body_is_a_400_saying_what_was_expected(client: TestClient, body: bytes) -> None:
    answer = client.post("/v2/repository/models/bc/load", content=body, headers=AUTH)

    assert answer.status_code == 400 and "parameters" in answer.json()["error"]
    assert predict(client).json()["version"] == "2"


def test_oip_paths_route_by_model_and_version(repo: Path) -> None:
    (repo / "bc" / "config.json").write_text('{"version_policy": {"all": {}}}')
    with serve(repo) as client:
        body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row(client)}]}
        by_version = {
            v: client.post(f"/v2/models/bc/versions/{v}/infer", json=body).json() for v in ("1", "2")
        }
        newest = client.post("/v2/models/bc/infer", json=body).json()
        metadata = client.get("/v2/models/bc").json()
        iris = client.get("/v2/models/iris").json()
        bad = client.post("/v2/models/%2E%2E/infer", json=body)
        bad_version = client.post("/v2/models/bc/versions/01/infer", json=body)
        missing = client.get("/v2/models/bc/versions/7/ready")

    assert [by_version[v]["model_version"] for v in ("1", "2")] == ["1", "2"]
    probabilities = [
        next(o for o in by_version[v]["outputs"] if o["name"] == "probabilities") for v in ("1", "2")
    ]
    assert probabilities[0]["data"] != probabilities[1]["data"]  # two trainings, two answers
    assert newest["model_version"] == "2"
    assert metadata["versions"] == ["1", "2"] and iris["versions"] == ["1"]
    assert bad.status_code == 400 and bad_version.status_code == 400 and missing.status_code == 404
