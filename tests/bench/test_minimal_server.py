"""bench/minimal.py is a real model server, however small: its answers are the network's, each caller gets
its own rows from a merged batch, and a bad body is refused. Otherwise its ratio would mean nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.check import check_answer, sample_rows
from bench.minimal import create_app
from models.lean import load_lean_artifact
from models.numpy_net import softmax


@pytest.mark.parametrize("fixture", ["breast_cancer_artifact", "diabetes_artifact"])
def test_minimal_server_answers_each_caller_with_the_networks_rows(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    artifact = load_lean_artifact(model_dir)
    labels = artifact.manifest.class_labels
    # Rows as the benchmark sends them, spread like the training data. Standard normal raw rows made logits
    # up to 150, where float32 rounding alone (folded against unfolded) reached 5.8e-6 in a probability on
    # an AMD EPYC's BLAS kernels, past the benchmark's 1e-6.
    rows = sample_rows(artifact, 12)
    bodies = np.split(rows, np.cumsum((1, 3, 1, 5)))
    expected = [artifact.network(x) for x in bodies]  # unfolded and unbatched
    expected = [softmax(e) if labels is not None else e for e in expected]

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(model_dir))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            # Sent at once: the server merges them into forward passes.
            return await asyncio.gather(
                *(client.post("/predict", json={"instances": x.tolist()}) for x in bodies)
            )

    for response, want in zip(asyncio.run(run()), expected, strict=True):
        assert response.status_code == 200
        if labels is not None:  # probabilities: the benchmark's own check, 1e-6
            assert check_answer(response.json(), want.astype(np.float64), labels) is None
        else:  # values in real units (about 10 to 300): folded float32 is within float32's relative precision
            got = [p["value"] for p in response.json()["predictions"]]
            np.testing.assert_allclose(got, want[:, 0], rtol=1e-5)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"instances": [[1, 2]]}',
        b'{"instances": [["a"] ]}',
        b'{"rows": []}',
        b'{"instances": [[1e39]]}',
    ],
)
def test_minimal_server_refuses_what_is_not_rows_of_finite_numbers(
    breast_cancer_artifact: Path, body: bytes
) -> None:
    if body == b'{"instances": [[1e39]]}':
        body = b'{"instances": [[' + b",".join([b"1e39"] * 30) + b"]]}"  # the right width, beyond float32

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(breast_cancer_artifact))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/predict", content=body, headers={"content-type": "application/json"})

    response = asyncio.run(run())
    assert response.status_code == 422
    assert "error" in response.json()
