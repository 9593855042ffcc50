"""Hot swaps under load, against a real server process over a real socket: 16 connections sending one-row
and 256-row requests while versions are swapped, and while tampered versions are put into the repository.

Zero failed requests, and every answer equal (1e-6) to the unbatched, unfolded network of the version it
names. Swap latency is a benchmark (bench/repository.py), never asserted here.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.load import free_port
from tests.service.repository.swapping import (
    ADMIN_TOKEN,
    Load,
    Versions,
    change_running_var_and_reseal,
    copy_version,
    drive_until,
    edit_manifest_eps,
    flip_weight_byte,
    publish,
    remove_weights,
    wait_for,
)
from tests.test_e2e_server import running_server
from training import TrainConfig, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bc/1`` and ``bc/2``: the breast-cancer MLP trained with two seeds (different weights)."""
    repo = tmp_path_factory.mktemp("repo")
    for seed in (0, 1):
        train(
            TrainConfig(
                dataset="breast_cancer", repository=str(repo), name="bc", seed=seed, epochs=2,
                hidden=(32, 32), device="cpu", progress=False,
            )
        )  # fmt: skip
    return repo


@pytest.fixture
def repository(trained: Path, tmp_path: Path) -> Path:
    """A private copy of ``trained``: the tests add versions to it."""
    return Path(shutil.copytree(trained, tmp_path / "repo"))


class Traffic:
    """The load generator, on its own thread and event loop, until ``stop``."""

    def __init__(self, port: int, versions: Versions) -> None:
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self.result: Load | None = None
        self._thread = threading.Thread(target=self._run, args=(port, versions))
        self._thread.start()

    def _run(self, port: int, versions: Versions) -> None:
        self.result = self._loop.run_until_complete(drive_until(port, versions, self._stop))

    def stop(self) -> Load:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
        assert self.result is not None
        return self.result


@pytest.fixture
def server(repository: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        "BNSERVE_REPOSITORY": str(repository),
        "BNSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BNSERVE_DEVICE": "cpu",
        **getattr(request, "param", {}),
    }
    command = [sys.executable, "-m", "service", "--port", str(port)]
    with running_server(command, port, tmp_path / "server.log", env) as url:
        yield url, port


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=120)


def test_twenty_swaps_under_load_fail_no_request_and_each_answer_is_the_named_versions(
    repository: Path, server: tuple[str, int]
) -> None:
    url, port = server
    versions = Versions.of(repository / "bc", [1, 2])
    traffic = Traffic(port, versions)
    swapped_in = []
    try:
        with admin(url) as http:
            assert wait_for(
                lambda: http.get("/models").json()["models"][0]["versions"][1]["state"] == "READY"
            )
            for i in range(20):
                version = "1" if i % 2 == 0 else "2"
                answer = http.post("/v2/repository/models/bc/load", json={"parameters": {"version": version}})
                assert answer.status_code == 200, answer.text
                probe = http.post("/predict", json={"instances": versions.rows[:1].tolist()}).json()
                swapped_in.append(probe["version"])
                threading.Event().wait(0.3)  # let the traffic run on this version a while
    finally:
        load = traffic.stop()

    assert swapped_in == ["1", "2"] * 10
    assert load.failures == [] and load.wrong == [], (load.failures[:5], load.wrong[:5])
    assert load.answers["1"] > 0 and load.answers["2"] > 0 and load.total > 100


TAMPERINGS = [
    (flip_weight_byte, "SHA-256"),
    (change_running_var_and_reseal, "bn_fingerprint"),
    (edit_manifest_eps, "canary outputs"),
    (remove_weights, "missing weights.safetensors"),
]


@pytest.mark.parametrize("server", [{"BNSERVE_REPOSITORY_POLL_S": "0.2"}], indirect=True)
def test_tampered_versions_put_in_under_load_are_refused_and_the_previous_one_keeps_answering(
    repository: Path, server: tuple[str, int]
) -> None:
    url, port = server
    model_dir = repository / "bc"
    versions = Versions.of(model_dir, [2])
    traffic = Traffic(port, versions)
    refused = {}
    try:
        with admin(url) as http:
            for number, (tamper, reason) in enumerate(TAMPERINGS, start=3):
                staging = copy_version(model_dir, 2, number)
                tamper(staging)
                publish(staging, number)

                def index(number: int = number) -> dict[str, str]:
                    entries = http.post("/v2/repository/index", json={}).json()
                    return next((e for e in entries if e["version"] == str(number)), {})

                assert wait_for(lambda: index().get("state") == "UNAVAILABLE", timeout_s=60), index()
                refused[number] = index()["reason"]
                assert reason in refused[number]
                assert http.get("/readyz").status_code == 200
    finally:
        load = traffic.stop()

    assert load.failures == [] and load.wrong == [], (load.failures[:5], load.wrong[:5])
    assert set(load.answers) == {"2"} and load.total > 50


@pytest.mark.parametrize("server", [{"BNSERVE_WORKERS": "2"}], indirect=True)
def test_with_two_workers_a_rollback_and_an_unload_reach_both_and_any_index_says_so(
    repository: Path, server: tuple[str, int]
) -> None:
    url, _ = server
    row = Versions.of(repository / "bc", [1]).rows[:1].tolist()

    def versions_answering() -> set[str]:
        answers = set()
        for _ in range(30):  # a new connection each: the workers share the listening socket
            with httpx.Client(base_url=url, timeout=30) as http:
                answer = http.post("/predict", json={"instances": row})
                answers.add(answer.json().get("version", str(answer.status_code)))
        return answers

    with admin(url) as http:
        assert (
            http.post("/v2/repository/models/bc/load", json={"parameters": {"version": "1"}}).status_code
            == 200
        )
        assert versions_answering() == {"1"}
        index = {e["version"]: e for e in http.post("/v2/repository/index", json={}).json()}
        assert index["1"]["state"] == "READY" and "all 2 workers" in index["1"]["reason"]
        assert index["2"]["state"] == "UNAVAILABLE"

        assert http.post("/v2/repository/models/bc/unload").status_code == 200
        assert versions_answering() == {"503"}
        assert http.post("/v2/repository/models/bc/load").status_code == 200
        assert versions_answering() == {"2"}


def test_the_real_tritonclient_drives_the_repository_and_infers_each_version(
    repository: Path, server: tuple[str, int]
) -> None:
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    url, port = server
    rows = Versions.of(repository / "bc", [1]).rows[:3]
    admin_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        index = client.get_model_repository_index(headers=admin_headers)
        assert {(e["name"], e["version"], e["state"]) for e in index} == {
            ("bc", "1", "UNAVAILABLE"),
            ("bc", "2", "READY"),
        }
        with pytest.raises(InferenceServerException, match="Authorization"):
            client.unload_model("bc")
        with pytest.raises(InferenceServerException, match="config"):
            client.load_model("bc", headers=admin_headers, config='{"max_batch_size": 8}')

        client.unload_model("bc", headers=admin_headers)
        assert not client.is_model_ready("bc")
        client.load_model("bc", headers=admin_headers)
        assert client.is_model_ready("bc") and client.is_model_ready("bc", "2")

        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        answer = client.infer("bc", [tensor], model_version="2")
        assert answer.get_response()["model_version"] == "2"
        with httpx.Client(base_url=url) as http:
            expected = http.post(
                "/predict", params={"version": "2"}, json={"instances": rows.tolist()}
            ).json()
        probabilities = answer.as_numpy("probabilities")
        labels = list(expected["predictions"][0]["probabilities"])
        want = np.array([[p["probabilities"][k] for k in labels] for p in expected["predictions"]])
        np.testing.assert_allclose(probabilities, want, atol=1e-6)
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            client.infer("bc", [tensor], model_version="1")
    finally:
        client.close()
