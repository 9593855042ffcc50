"""End to end: a real server process on a free port, spoken to over HTTP, then stopped cleanly.

python -m service --model DIR --port PORT
BNSERVE_MODEL_DIR=DIR uvicorn --factory service.http.app:create_app --port PORT
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.load import free_port

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 60  # importing torch on a busy 2-core machine takes a while


@contextmanager
def running_server(
    command: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Yields the base URL once /readyz answers 200; stops the process with SIGINT and checks it exits 0."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BNSERVE_")} | (env or {})
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            returncode = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert returncode == 0, log.read_text()


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with {process.returncode} before it was ready:\n{log.read_text()}"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server was not ready after {STARTUP_SECONDS} s:\n{log.read_text()}")


def check_it_serves(url: str, artifact_dir: Path) -> None:
    """Predict, BN statistics and a bad request, over real HTTP."""
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    row = manifest["canary"]["inputs"][0]
    with httpx.Client(base_url=url, timeout=10) as http:
        predict = http.post("/predict", json={"instances": [row, row]})
        bn_stats = http.get("/bn-stats", params={"vectors": "false"})
        bad = http.post("/predict", json={"instances": [row[:-1]]})

    assert predict.status_code == 200
    first, second = predict.json()["predictions"]
    assert first["label"] == second["label"] in manifest["class_labels"]
    assert first["probabilities"] == pytest.approx(second["probabilities"], abs=1e-6)
    assert bn_stats.status_code == 200
    assert bn_stats.json()["fingerprint"] == manifest["bn_fingerprint"]
    assert [layer["name"] for layer in bn_stats.json()["layers"]] == [
        b["name"] for b in manifest["layers"] if b["type"].startswith("BatchNorm")
    ]
    assert bad.status_code == 422
    assert bad.json() == {"error": f"expected {len(row)} features, got {len(row) - 1} at row 0"}


@pytest.mark.parametrize("artifact", ["breast_cancer_artifact", "table_artifact"])
def test_python_m_service_serves_announces_its_quick_start_and_stops_cleanly(
    artifact: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Also for a model trained on a mixed table: its raw rows (strings, true/false, null) over real HTTP,
    and the banner's curl line, pasted as it stands."""
    artifact_dir: Path = request.getfixturevalue(artifact)
    port = free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "service", "--model", str(artifact_dir), "--port", str(port)]

    with running_server(command, port, log) as url:
        check_it_serves(url, artifact_dir)
        output = log.read_text()
        curl_predict = re.search(
            rf"curl -s {re.escape(url)}/predict -H 'Content-Type: application/json' -d '(.+)'", output
        )
        assert curl_predict is not None, output
        pasted = httpx.post(
            f"{url}/predict",
            content=curl_predict.group(1),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )

    assert url in output
    assert f"curl -s '{url}/bn-stats" in output
    assert pasted.status_code == 200
    assert len(pasted.json()["predictions"]) == 1


def test_uvicorn_factory_form_serves_the_model_named_by_bnserve_model_dir(
    breast_cancer_artifact: Path, tmp_path: Path
) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "service.http.app:create_app",
        "--port",
        str(port),
    ]
    env = {"BNSERVE_MODEL_DIR": str(breast_cancer_artifact), "BNSERVE_PORT": str(port)}

    with running_server(command, port, tmp_path / "server.log", env=env) as url:
        check_it_serves(url, breast_cancer_artifact)
