"""The predictor serves the frozen network: eval mode, no gradients, inference mode, never training-mode BN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import service.inference.runtime
from models import Artifact, batchnorm_layers, load_artifact
from service.inference.predictor import Predictor
from service.settings import Settings
from tests.service.serving import manifest_of, serving


@pytest.fixture
def bn_forced_into_training(monkeypatch: pytest.MonkeyPatch, breast_cancer_artifact: Path) -> str:
    """Gives back the name of the BN layer that the predictor's loader now hands back with training=True."""
    last_bn = load_artifact(breast_cancer_artifact).batchnorm[-1].name

    def load_with_one_bn_training(path: Path, *, device: str | torch.device = "cpu") -> Artifact:
        artifact = load_artifact(path, device=device)
        dict(batchnorm_layers(artifact.model))[last_bn].train()
        return artifact

    monkeypatch.setattr(service.inference.runtime, "load_artifact", load_with_one_bn_training)
    return last_bn


@pytest.mark.parametrize("fold_bn", [True, False])
def test_loaded_network_is_in_eval_mode_with_no_parameter_requiring_grad(
    breast_cancer_artifact: Path, fold_bn: bool
) -> None:
    predictor = Predictor(Settings(model_dir=breast_cancer_artifact, device="cpu", fold_bn=fold_bn))

    predictor.load()

    assert predictor.ready, predictor.error
    assert predictor.artifact is not None and predictor.serving_model is not None
    for network in (predictor.artifact.model, predictor.serving_model):
        assert not any(module.training for module in network.modules())
        assert not any(p.requires_grad for p in network.parameters())


def test_every_request_runs_under_inference_mode(
    torch_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = torch_client
    predictor = client.app.state.predictor  # type: ignore[attr-defined]
    modes: list[tuple[bool, bool, bool]] = []

    class ModeRecorder:
        """An activation observer: it runs inside the forward pass and sees the tensors it makes."""

        def begin(self, x: torch.Tensor) -> ModeRecorder:
            self.seen: list[torch.Tensor] = []
            return self

        def see(self, name: str, h: torch.Tensor) -> None:
            self.seen.append(h)

        def end(self) -> None:
            made_in_inference_mode = all(t.is_inference() for t in self.seen)
            modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled(), made_in_inference_mode))

    monkeypatch.setattr(predictor.runtime, "observer", ModeRecorder())
    n = len(predictor.feature_names)
    for rows in (1, 8, 300):  # 300 rows run in the worker thread rather than on the event loop
        response = client.post("/predict", json={"instances": [[1.0] * n] * rows})
        assert response.status_code == 200

    assert modes == [(True, False, True)] * 3


def test_load_refuses_a_network_whose_bn_layer_reports_training(
    breast_cancer_artifact: Path, bn_forced_into_training: str
) -> None:
    predictor = Predictor(Settings(model_dir=breast_cancer_artifact, device="cpu"))

    predictor.load()

    assert not predictor.ready
    assert predictor.error is not None
    assert "training mode" in predictor.error
    assert repr(bn_forced_into_training) in predictor.error


def test_service_with_a_training_mode_bn_layer_never_becomes_ready(
    breast_cancer_artifact: Path, bn_forced_into_training: str
) -> None:
    n = len(manifest_of(breast_cancer_artifact)["feature_names"])
    with serving(breast_cancer_artifact) as client:
        ready = client.get("/readyz")
        predict = client.post("/predict", json={"instances": [[1.0] * n]})

    assert ready.status_code == 503
    assert "training mode" in ready.json()["error"]
    assert repr(bn_forced_into_training) in ready.json()["error"]
    assert predict.status_code == 503


def test_an_unreadable_artifact_leaves_the_service_unready_instead_of_crashing(
    breast_cancer_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: Path, **_: object) -> None:
        raise PermissionError(13, "Permission denied", str(Path(path) / "weights.safetensors"))

    monkeypatch.setattr("service.inference.runtime.load_artifact", refuse)
    predictor = Predictor(Settings(model_dir=breast_cancer_artifact, device="cpu"))

    predictor.load()

    assert not predictor.ready
    assert predictor.error is not None and "Permission denied" in predictor.error
    assert "weights.safetensors" in predictor.error


FAULTS_PER_FORWARD = """
import resource, sys, threading
import torch
from service.inference.tuning import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
x, w = torch.randn(1024, 256), torch.randn(256, 256)
def forwards(n):
    for _ in range(n):
        (((x @ w).relu()) @ w).relu()  # 1 MB activations, allocated and freed
def run():
    forwards(5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    forwards(100)
    print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
thread = threading.Thread(target=run)  # where large batches run: the batcher's worker thread
thread.start()
thread.join()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_freed_activations_are_reused_instead_of_faulted_in_again_each_forward() -> None:
    def faults(mode: str) -> tuple[str, float]:
        done = subprocess.run(
            [sys.executable, "-c", FAULTS_PER_FORWARD, mode], capture_output=True, text=True, check=True
        )
        tuned, per_forward = done.stdout.split()
        return tuned, float(per_forward)

    (tuned, with_tuning), (_, without) = faults("tuned"), faults("default")
    assert tuned == "True"
    assert with_tuning < 10, f"{with_tuning} page faults per 1,024-row forward (untuned: {without})"


@pytest.mark.parametrize("budget_ms", [0.0, 5.0, 12.5])
def test_the_inline_budget_setting_reaches_the_batcher(
    breast_cancer_artifact: Path, budget_ms: float
) -> None:
    predictor = Predictor(
        Settings(model_dir=breast_cancer_artifact, device="cpu", runtime="lean", inline_budget_ms=budget_ms)
    )
    predictor.load()
    try:
        assert predictor.batcher is not None
        assert predictor.batcher.inline_s == pytest.approx(budget_ms / 1000)
    finally:
        predictor.close()
