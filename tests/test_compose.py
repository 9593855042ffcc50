"""docker-compose.yml and the Dockerfile, checked without a container engine.

Each service's command runs here as a plain process with that service's environment: the named volume's mount
point becomes a temporary directory, the API's port a free one, and ``python`` this interpreter. The trainer runs
first (with ``TRAIN_ARGS=--epochs 2`` to keep it short), then the api, whose own healthcheck command must pass
before ``/predict`` is asked.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.load import free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# What the person running `docker compose up` would have in their shell.
HOST_ENV = {"TRAIN_ARGS": "--epochs 2"}
READY_TIMEOUT_S = 90.0


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Returns ``value`` with compose's ``${VAR}``, ``${VAR:-default}``, ``$VAR`` and ``$$`` substituted."""

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        default = m.group("default")
        got = env.get(name, "")
        return got if got or default is None else default

    return re.sub(r"\$\$|\$\{(?P<braced>\w+)(?::-(?P<default>[^}]*))?\}|\$(?P<bare>\w+)", substitute, value)


@dataclass
class Service:
    """One compose service turned into a local process: argv, environment, and path/port rewrites."""

    name: str
    spec: dict[str, Any]
    volume_root: Path
    port: int | None = None

    def mounts(self) -> dict[str, Path]:
        """Maps each mount point in the container to the host directory standing in for its named volume."""
        mounts = {}
        for volume in self.spec.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert not source.startswith((".", "/")), f"{self.name}: expected a named volume, got {volume!r}"
            mounts[target] = self.volume_root / source
        return mounts

    def create_volumes(self) -> None:
        for source in self.mounts().values():
            source.mkdir(parents=True, exist_ok=True)

    def container_port(self) -> str | None:
        ports = self.spec.get("ports", [])
        return str(ports[0]).split(":")[-1] if ports else None

    def to_host(self, value: str) -> str:
        """Returns ``value`` with compose interpolation done and container paths and port made local."""
        value = interpolate(value, HOST_ENV)
        for target, source in self.mounts().items():
            value = re.sub(rf"(?<![\w./-]){re.escape(target)}(?![\w.-])", str(source), value)
        if self.port is not None and (container_port := self.container_port()):
            value = re.sub(rf"\b{container_port}\b", str(self.port), value)
        return value

    def env(self) -> dict[str, str]:
        raw = self.spec.get("environment", {})
        if isinstance(raw, list):
            raw = dict(item.split("=", 1) for item in raw)
        # A container sees only what compose gives it: keep this shell's BNSERVE_* settings out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("BNSERVE_") and k not in HOST_ENV}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update({key: self.to_host(str(value)) for key, value in raw.items()})
        return env

    def command(self) -> list[str]:
        command = self.spec["command"]
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        return [self.to_host(arg) for arg in argv]

    def healthcheck(self) -> list[str]:
        test = self.spec["healthcheck"]["test"]
        if isinstance(test, str):
            return ["sh", "-c", self.to_host(test)]
        kind, *args = test
        assert kind in ("CMD", "CMD-SHELL"), f"{self.name}: unexpected healthcheck test {test!r}"
        args = [self.to_host(arg) for arg in args]
        return args if kind == "CMD" else ["sh", "-c", args[0]]


def run_trainer(volume_root: Path) -> subprocess.CompletedProcess[str]:
    trainer = Service("trainer", load_compose()["services"]["trainer"], volume_root)
    trainer.create_volumes()
    return subprocess.run(
        trainer.command(), env=trainer.env(), cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@dataclass
class Stack:
    volume_root: Path
    api: Service

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"


@contextmanager
def started(api: Service, log_path: Path) -> Iterator[None]:
    """Runs ``api``'s command as a process until its own healthcheck passes; stops it afterwards."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            api.command(), env=api.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"{api.name} exited with {process.returncode}:\n{log_path.read_text()}")
            check = subprocess.run(api.healthcheck(), env=api.env(), capture_output=True, timeout=30)
            if check.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{api.name} healthcheck still failing after {READY_TIMEOUT_S:.0f}s:\n"
                    f"{check.stderr.decode()}\n{api.name} log:\n{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The trainer run to completion, then the api started and waited on with its own healthcheck."""
    volume_root = tmp_path_factory.mktemp("volumes")
    trained = run_trainer(volume_root)
    assert trained.returncode == 0, f"trainer failed:\n{trained.stdout}\n{trained.stderr}"

    api = Service("api", load_compose()["services"]["api"], volume_root, port=free_port())
    with started(api, volume_root / "api.log"):
        yield Stack(volume_root, api)


def test_api_starts_only_after_the_trainer_completed_successfully() -> None:
    depends_on = load_compose()["services"]["api"]["depends_on"]
    assert depends_on["trainer"]["condition"] == "service_completed_successfully"


def test_api_reads_the_model_the_trainer_writes_to_the_shared_volume() -> None:
    services = load_compose()["services"]
    trainer_volumes = {v.split(":")[0] for v in services["trainer"]["volumes"]}
    api_volumes = {v.split(":")[0] for v in services["api"]["volumes"]}
    assert trainer_volumes & api_volumes & set(load_compose()["volumes"]), "no named volume shared"
    assert services["api"]["environment"]["BNSERVE_MODEL_DIR"] == "/artifacts/breast_cancer"
    assert services["api"]["environment"]["BNSERVE_HOST"] == "0.0.0.0"
    assert "--out /artifacts/breast_cancer" in " ".join(services["trainer"]["command"])


def test_gpu_trainer_is_opt_in_reserves_an_nvidia_device_and_trains_on_cuda() -> None:
    gpu = load_compose()["services"]["trainer-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "--device cuda" in f"{gpu['command']} {gpu['environment']}"


def test_dockerfile_pins_cpu_torch_runs_as_a_non_root_user_and_checks_readyz() -> None:
    dockerfile = DOCKERFILE.read_text().replace("\\\n", " ")  # one instruction per line
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "torch==2.13.0" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), f"last USER is {users[-1:]}"
    healthcheck = re.search(r"^HEALTHCHECK .*", dockerfile, re.M)
    assert healthcheck and "/readyz" in healthcheck.group(0) and "urllib" in healthcheck.group(0)


def test_api_healthcheck_command_fails_while_nothing_answers(tmp_path: Path) -> None:
    api = Service("api", load_compose()["services"]["api"], tmp_path, port=free_port())
    assert subprocess.run(api.healthcheck(), env=api.env(), capture_output=True, timeout=30).returncode != 0


@pytest.mark.slow
def test_trainer_writes_the_artifact_into_the_named_volume(stack: Stack) -> None:
    artifact = stack.volume_root / "artifacts" / "breast_cancer"
    assert (artifact / "manifest.json").is_file(), sorted(p.name for p in artifact.parent.iterdir())


@pytest.mark.slow
def test_trainer_skips_training_when_the_artifact_is_already_there(stack: Stack) -> None:
    manifest = stack.volume_root / "artifacts" / "breast_cancer" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    again = run_trainer(stack.volume_root)
    assert again.returncode == 0, again.stderr
    assert "not retraining" in again.stdout
    assert manifest.stat().st_mtime_ns == before


@pytest.mark.slow
def test_api_healthcheck_command_passes_once_ready(stack: Stack) -> None:
    assert subprocess.run(stack.api.healthcheck(), env=stack.api.env(), timeout=30).returncode == 0


@pytest.mark.slow
def test_api_predicts_a_breast_cancer_row(stack: Stack) -> None:
    from sklearn.datasets import load_breast_cancer

    row = load_breast_cancer().data[0].tolist()
    response = httpx.post(f"{stack.url}/predict", json={"instances": [row]}, timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert isinstance(predictions, list) and len(predictions) == 1


def test_the_lean_api_is_opt_in_built_without_torch_and_serves_the_same_volume() -> None:
    services = load_compose()["services"]
    lean, api = services["api-lean"], services["api"]
    assert lean["profiles"] == ["lean"]
    assert lean["build"]["args"]["RUNTIME"] == "lean" and lean["image"] != api["image"]
    assert lean["environment"]["BNSERVE_RUNTIME"] == "lean"
    assert lean["volumes"] == api["volumes"] and lean["depends_on"] == api["depends_on"]


@pytest.mark.slow
def test_the_lean_api_answers_as_the_api_does(stack: Stack) -> None:
    lean = Service("api-lean", load_compose()["services"]["api-lean"], stack.volume_root, port=free_port())
    with started(lean, stack.volume_root / "api-lean.log"):
        url = f"http://127.0.0.1:{lean.port}"
        serving = httpx.get(f"{url}/metadata", timeout=30).json()["serving"]
        assert serving["runtime"] == "lean"
        n = len(httpx.get(f"{url}/metadata", timeout=30).json()["feature_names"])
        body = {"instances": [[float(i % 7) for i in range(n)]] * 3}
        got = httpx.post(f"{url}/predict", json=body, timeout=30).json()["predictions"]
    want = httpx.post(f"{stack.url}/predict", json=body, timeout=30).json()["predictions"]
    assert [p["label"] for p in got] == [p["label"] for p in want]
    for g, w in zip(got, want, strict=True):
        for label, probability in w["probabilities"].items():
            assert abs(g["probabilities"][label] - probability) <= 1e-5
