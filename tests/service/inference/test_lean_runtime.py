"""BNSERVE_RUNTIME=lean: the same answers, statistics and drift as the torch runtime, and torch never imported.

(Every test served a client also runs on lean: tests/service/conftest.py.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.load import free_port
from models.lean import fold, load_lean_artifact
from models.numpy_net import softmax
from service.inference.lean import LeanRuntime
from tests.service.serving import loaded_predictor, rows_like_training, serving

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ["breast_cancer_artifact", "digits_artifact", "diabetes_artifact"]  # MLP, CNN, regressor


@pytest.mark.parametrize("fold_bn", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_lean_runtime_answers_equal_the_torch_runtimes_on_10000_rows(
    artifact: str, fold_bn: bool, request: pytest.FixtureRequest
) -> None:
    artifact_dir: Path = request.getfixturevalue(artifact)
    rows = rows_like_training(artifact_dir, 10_000, seed=3)
    answers = {}
    for runtime in ("torch", "lean"):
        predictor = loaded_predictor(artifact_dir, runtime=runtime, fold_bn=fold_bn, drift_enabled=False)
        assert predictor.runtime is not None
        answers[runtime] = predictor.runtime.forward(rows)
    assert answers["lean"].dtype == np.float32
    # 1e-5, and for a regression's values in target units (~100) 1e-5 of their size: float32's own spacing
    np.testing.assert_allclose(answers["lean"], answers["torch"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_lean_service_reports_the_same_bn_stats_and_metadata_as_the_torch_one(
    artifact: str, request: pytest.FixtureRequest
) -> None:
    artifact_dir: Path = request.getfixturevalue(artifact)
    views = {}
    for runtime in ("torch", "lean"):
        with serving(artifact_dir, runtime=runtime) as client:
            views[runtime] = (client.get("/bn-stats").json(), client.get("/metadata").json())
    (stats_torch, meta_torch), (stats_lean, meta_lean) = views["torch"], views["lean"]
    assert stats_lean == stats_torch  # vectors, fingerprints, mode: read from weights.safetensors on lean
    assert stats_lean["fingerprint"] == stats_lean["artifact_fingerprint"]
    assert meta_lean["serving"]["runtime"] == "lean" and meta_torch["serving"]["runtime"] == "torch"
    assert meta_lean["serving"]["device"] == "cpu"
    for key in ("artifact_sha256", "bn_fingerprint", "batchnorm", "feature_names", "class_labels"):
        assert meta_lean[key] == meta_torch[key], key
    assert meta_lean["serving"]["fold_max_abs_diff"] <= 1e-5


@pytest.mark.parametrize("artifact", ["breast_cancer_artifact", "digits_artifact"])
def test_lean_drift_monitor_sees_what_the_torch_one_sees(
    artifact: str, request: pytest.FixtureRequest
) -> None:
    artifact_dir: Path = request.getfixturevalue(artifact)
    rows = rows_like_training(artifact_dir, 600, seed=5, shift=2.5)
    reports = {}
    for runtime in ("torch", "lean"):
        with serving(artifact_dir, runtime=runtime, drift_min_rows=100) as client:
            for i in range(0, len(rows), 50):  # batches of 50 and of 1: both capture paths
                body = rows[i : i + 50] if i % 100 else rows[i : i + 1]
                assert client.post("/predict", json={"instances": body.tolist()}).status_code == 200
            reports[runtime] = client.get("/drift").json()
    torch_report, lean_report = reports["torch"], reports["lean"]
    assert lean_report["rows"] == torch_report["rows"] > 0
    assert lean_report["verdict"] == torch_report["verdict"] == "drift"
    assert lean_report["score"] == pytest.approx(torch_report["score"], rel=1e-4)
    for torch_layer, lean_layer in zip(torch_report["layers"], lean_report["layers"], strict=True):
        assert lean_layer["name"] == torch_layer["name"]
        assert lean_layer["score"] == pytest.approx(torch_layer["score"], rel=1e-4, abs=1e-6)
        assert lean_layer["rms_shift"] == pytest.approx(torch_layer["rms_shift"], rel=1e-4, abs=1e-6)
    assert lean_report["input"]["score"] == pytest.approx(torch_report["input"]["score"], rel=1e-6)


def test_lean_service_refuses_a_tampered_artifact_with_the_torch_services_reason(
    breast_cancer_artifact: Path, tmp_path: Path
) -> None:
    artifact_dir = Path(shutil.copytree(breast_cancer_artifact, tmp_path / "tampered"))
    weights = artifact_dir / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    errors = {}
    for runtime in ("torch", "lean"):
        with serving(artifact_dir, runtime=runtime) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert client.post("/predict", json={"instances": [[0.0] * 30]}).status_code == 503
            errors[runtime] = ready.json()["error"]
    assert errors["lean"] == errors["torch"]
    assert "weights.safetensors" in errors["lean"] and "SHA-256" in errors["lean"]


def test_lean_runtime_on_cuda_is_refused_with_what_to_use(breast_cancer_artifact: Path) -> None:
    with serving(breast_cancer_artifact, runtime="lean", device="cuda") as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "BNSERVE_RUNTIME=torch" in ready.json()["error"]


LEAN_SERVICE = """
import sys
import numpy as np
from fastapi.testclient import TestClient
from service.http.app import create_app
from service.settings import Settings

with TestClient(create_app(Settings(model_dir=sys.argv[1], runtime="lean", device="cpu"))) as client:
    assert client.get("/readyz").status_code == 200
    n = len(client.get("/metadata").json()["feature_names"])
    rows = np.ones((300, n), dtype=np.float32)  # large enough for the batcher's worker thread
    for body, headers in (
        ({"json": {"instances": rows[:3].tolist()}}, {}),
        ({"content": rows.tobytes()}, {"Content-Type": "application/octet-stream",
                                       "Accept": "application/octet-stream"}),
    ):
        assert client.post("/predict", headers=headers, **body).status_code == 200
    for path in ("/bn-stats", "/drift", "/metrics", "/metadata", "/healthz", "/history", "/", "/openapi.json"):
        assert client.get(path).status_code == 200, path
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


@pytest.mark.parametrize("artifact", ["breast_cancer_artifact", "digits_artifact"])
def test_the_lean_service_never_imports_torch_from_start_to_serving_every_route(
    artifact: str, request: pytest.FixtureRequest
) -> None:
    artifact_dir: Path = request.getfixturevalue(artifact)
    done = subprocess.run(
        [sys.executable, "-c", LEAN_SERVICE, str(artifact_dir)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


@pytest.mark.slow
def test_a_lean_server_process_has_no_torch_library_mapped(
    breast_cancer_artifact: Path, tmp_path: Path
) -> None:
    port = free_port()
    env_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time, urllib.request
        env = {{k: v for k, v in os.environ.items() if not k.startswith("BNSERVE_")}} | {{"BNSERVE_RUNTIME": "lean"}}
        p = subprocess.Popen([sys.executable, "-m", "service", "--model", {str(breast_cancer_artifact)!r},
                              "--port", "{port}", "--log-level", "warning"], env=env)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen("http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            maps = open(f"/proc/{{p.pid}}/maps").read()
            print("libtorch" in maps, "numpy" in maps)
        finally:
            p.terminate()
            p.wait(timeout=20)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", env_code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["False", "True"], done.stdout + done.stderr[-3000:]


def test_the_lean_runtime_can_give_the_logits_beside_the_probabilities(breast_cancer_artifact: Path) -> None:
    network, _ = fold(load_lean_artifact(breast_cancer_artifact))
    rows = rows_like_training(breast_cancer_artifact, 64, seed=7)
    both = LeanRuntime(network, task="classification", keep_logits=True).forward(rows)
    assert both.shape == (64, 4)  # probabilities of the 2 classes, then their logits
    np.testing.assert_array_equal(both[:, 2:], network(rows))
    np.testing.assert_array_equal(both[:, :2], softmax(network(rows)))
    np.testing.assert_array_equal(LeanRuntime(network, task="classification").forward(rows), both[:, :2])
