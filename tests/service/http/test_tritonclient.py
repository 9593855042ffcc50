"""The real ``tritonclient[http]`` against a real bnserve process: what a Triton user's code does, unchanged.

Health, readiness, server and model metadata, inference with binary and JSON tensors both ways, requested
outputs, and errors read through the client's own ``InferenceServerException``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bench.load import free_port
from tests.service.serving import manifest_of, rows_like_training
from tests.test_e2e_server import running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(breast_cancer_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of ``python -m service`` serving the breast-cancer classifier."""
    port = free_port()
    log = tmp_path_factory.mktemp("tritonclient") / "server.log"
    command = [sys.executable, "-m", "service", "--model", str(breast_cancer_artifact), "--port", str(port)]
    with running_server(command, port, log, env={"BNSERVE_DEVICE": "cpu"}):
        yield f"127.0.0.1:{port}"


@pytest.fixture
def triton(server: str) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def name(breast_cancer_artifact: Path) -> str:
    return str(manifest_of(breast_cancer_artifact)["name"])


@pytest.fixture(scope="module")
def rows(breast_cancer_artifact: Path) -> np.ndarray:
    return rows_like_training(breast_cancer_artifact, 9, seed=11)


def predict_float32(server: str, rows: np.ndarray) -> np.ndarray:
    """The /predict bulk answer for ``rows``: what the OIP answers must equal bit for bit."""
    response = httpx.post(
        f"http://{server}/predict",
        content=rows.tobytes(),
        headers={"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype="<f4").reshape(len(rows), -1)


def input_tensor(rows: np.ndarray, *, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def test_tritonclient_sees_a_live_ready_server_and_model(
    triton: httpclient.InferenceServerClient, name: str
) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(name)
    assert triton.is_model_ready(name, "1")
    assert not triton.is_model_ready("no_such_model")


def test_tritonclient_reads_server_and_model_metadata(
    triton: httpclient.InferenceServerClient, name: str
) -> None:
    server = triton.get_server_metadata()
    assert server["name"] == "bnserve" and "binary_tensor_data" in server["extensions"]
    model = triton.get_model_metadata(name)
    assert model["name"] == name and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert [o["name"] for o in model["outputs"]] == ["probabilities", "label", "logits"]


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)]
)
def test_tritonclient_infer_gives_predicts_numbers_bit_for_bit(
    triton: httpclient.InferenceServerClient,
    server: str,
    name: str,
    rows: np.ndarray,
    binary_in: bool,
    binary_out: bool,
) -> None:
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary_out),
        httpclient.InferRequestedOutput("label", binary_data=binary_out),
    ]
    result = triton.infer(name, [input_tensor(rows, binary=binary_in)], outputs=outputs, request_id="r-7")
    expected = predict_float32(server, rows)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.tobytes() == expected.tobytes()
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    class_labels = httpx.get(f"http://{server}/metadata", timeout=30).json()["class_labels"]
    assert labels == [class_labels[i] for i in expected.argmax(axis=1)]
    assert result.get_response()["id"] == "r-7"


def test_tritonclient_gets_only_the_outputs_it_asks_for(
    triton: httpclient.InferenceServerClient, name: str, rows: np.ndarray
) -> None:
    result = triton.infer(
        name, [input_tensor(rows, binary=True)], outputs=[httpclient.InferRequestedOutput("logits")]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["logits"]
    assert result.as_numpy("probabilities") is None and result.as_numpy("logits").shape == (9, 2)
    default = triton.infer(name, [input_tensor(rows, binary=True)])
    assert [o["name"] for o in default.get_response()["outputs"]] == ["probabilities", "label"]


def test_tritonclient_versioned_and_compressed_requests_answer_alike(
    triton: httpclient.InferenceServerClient, name: str, rows: np.ndarray
) -> None:
    plain = triton.infer(name, [input_tensor(rows, binary=True)]).as_numpy("probabilities")
    versioned = triton.infer(name, [input_tensor(rows, binary=True)], model_version="1")
    compressed = triton.infer(name, [input_tensor(rows, binary=True)], request_compression_algorithm="gzip")
    assert versioned.as_numpy("probabilities").tobytes() == plain.tobytes()
    assert compressed.as_numpy("probabilities").tobytes() == plain.tobytes()


def test_errors_reach_tritonclient_as_its_own_exception_with_the_servers_message(
    triton: httpclient.InferenceServerClient, name: str, rows: np.ndarray
) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        triton.infer("no_such_model", [input_tensor(rows, binary=True)])
    assert unknown.value.status() == "404" and name in unknown.value.message()

    with pytest.raises(InferenceServerException) as version:
        triton.get_model_metadata(name, "7")
    assert version.value.status() == "404" and "no version '7'" in version.value.message()

    with pytest.raises(InferenceServerException) as shape:
        triton.infer(name, [input_tensor(rows[:, :29].copy(), binary=True)])
    assert shape.value.status() == "400" and "[B, 30]" in shape.value.message()

    bad = rows.copy()
    bad[2, 5] = np.inf
    with pytest.raises(InferenceServerException) as infinite:
        triton.infer(name, [input_tensor(bad, binary=False)])
    assert infinite.value.status() == "400" and "index [2, 5]" in infinite.value.message()

    with pytest.raises(InferenceServerException) as output:
        triton.infer(
            name, [input_tensor(rows, binary=True)], outputs=[httpclient.InferRequestedOutput("value")]
        )
    assert output.value.status() == "400" and "unknown output 'value'" in output.value.message()

    texts = httpclient.InferInput("input", [1, 30], "BYTES")
    texts.set_data_from_numpy(np.array([["x"] * 30], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException) as datatype:
        triton.infer(name, [texts])
    assert datatype.value.status() == "400" and "datatype BYTES" in datatype.value.message()
