"""Serving on a CUDA device: the same answers as the CPU, batch invariance, frozen statistics, drift.

Skipped where torch sees no CUDA device (CI has none); on a GPU machine run ``pytest tests -k cuda``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from tests.service.serving import post_concurrently, rows_like_training, serving

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ARTIFACTS = ["breast_cancer_artifact", "digits_artifact", "diabetes_artifact"]


@pytest.fixture(scope="module", params=ARTIFACTS)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, TestClient, Path]]:
    """The same artifact served on the GPU and on the CPU."""
    artifact_dir: Path = request.getfixturevalue(request.param)
    with serving(artifact_dir, device="cuda") as gpu, serving(artifact_dir, device="cpu") as cpu:
        yield gpu, cpu, artifact_dir


def answers(response_json: dict) -> np.ndarray:
    predictions = response_json["predictions"]
    if "value" in predictions[0]:
        return np.array([[p["value"]] for p in predictions])
    return np.array([list(p["probabilities"].values()) for p in predictions])


def invariance_tolerance(answers: np.ndarray) -> float:
    """1e-6 on probabilities; a regression value is in the target's units (hundreds), so 1e-6 of its size."""
    return 1e-6 * max(1.0, float(np.abs(answers).max()))


def test_auto_serves_on_the_gpu_and_says_so(pair: tuple[TestClient, TestClient, Path]) -> None:
    gpu, _, _ = pair
    serving_info = gpu.get("/metadata").json()["serving"]
    assert serving_info["device"].startswith("cuda")
    assert serving_info["fold_max_abs_diff"] <= 1e-5


def test_gpu_answers_equal_the_cpu_answers(pair: tuple[TestClient, TestClient, Path]) -> None:
    gpu, cpu, artifact_dir = pair
    rows = rows_like_training(artifact_dir, 300).tolist()
    on_gpu = gpu.post("/predict", json={"instances": rows})
    on_cpu = cpu.post("/predict", json={"instances": rows})
    assert on_gpu.status_code == on_cpu.status_code == 200
    got, expected = answers(on_gpu.json()), answers(on_cpu.json())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if "label" in on_cpu.json()["predictions"][0]:
        # a label may differ only where the CPU's two best probabilities are within the tolerance
        labels = [[p["label"] for p in r.json()["predictions"]] for r in (on_gpu, on_cpu)]
        close = np.diff(np.sort(expected, axis=1)[:, -2:], axis=1)[:, 0] < 2e-5
        assert all(g == c or near for g, c, near in zip(*labels, close, strict=True))


def test_on_the_gpu_a_rows_answer_is_the_same_alone_and_in_merged_batches(
    pair: tuple[TestClient, TestClient, Path],
) -> None:
    gpu, _, artifact_dir = pair
    rows = rows_like_training(artifact_dir, 200, seed=1)
    alone = np.concatenate(
        [answers(gpu.post("/predict", json={"instances": [r]}).json()) for r in rows[:40].tolist()]
    )
    bodies = [{"instances": rows[i : i + k].tolist()} for i, k in ((0, 1), (1, 7), (8, 32), (40, 160))]
    together = np.concatenate([answers(r.json()) for r in post_concurrently(gpu, "/predict", bodies)])
    whole = answers(gpu.post("/predict", json={"instances": rows.tolist()}).json())

    np.testing.assert_allclose(together[:40], alone, rtol=0, atol=invariance_tolerance(alone))
    np.testing.assert_allclose(whole[:40], alone, rtol=0, atol=invariance_tolerance(alone))


def test_the_float32_body_gives_the_json_answers_on_the_gpu(
    pair: tuple[TestClient, TestClient, Path],
) -> None:
    gpu, _, artifact_dir = pair
    rows = rows_like_training(artifact_dir, 64, seed=2)
    as_json = gpu.post("/predict", json={"instances": rows.tolist()})
    as_bytes = gpu.post(
        "/predict", content=rows.astype("<f4").tobytes(), headers={"content-type": "application/octet-stream"}
    )
    assert as_json.status_code == as_bytes.status_code == 200
    assert as_json.json()["predictions"] == as_bytes.json()["predictions"]


def test_gpu_traffic_leaves_the_frozen_statistics_unchanged_and_drift_matches_the_cpu(
    pair: tuple[TestClient, TestClient, Path],
) -> None:
    gpu, cpu, artifact_dir = pair
    before = gpu.get("/bn-stats").json()
    shifted = rows_like_training(artifact_dir, 1024, seed=3, shift=3.0)
    bodies = [{"instances": shifted[i : i + k].tolist()} for i, k in ((0, 1), (1, 63), (64, 960))]
    for client in (gpu, cpu):
        assert client.post("/drift/reset").status_code == 200
        assert all(r.status_code == 200 for r in post_concurrently(client, "/predict", bodies))

    after = gpu.get("/bn-stats").json()
    assert after["fingerprint"] == before["fingerprint"] == before["artifact_fingerprint"]
    assert after["layers"] == before["layers"] and after["mode"] == "eval"
    on_gpu, on_cpu = gpu.get("/drift").json(), cpu.get("/drift").json()
    assert on_gpu["rows"] == on_cpu["rows"] == 1024
    assert on_gpu["verdict"] == on_cpu["verdict"] == "drift"
    assert on_gpu["score"] == pytest.approx(on_cpu["score"], rel=1e-3)
    assert on_gpu["worst_layer"]["name"] == on_cpu["worst_layer"]["name"]
