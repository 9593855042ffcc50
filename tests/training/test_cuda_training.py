"""Training on a CUDA device: the same EMA statistics and an artifact that loads and serves anywhere.

Skipped where torch sees no CUDA device (CI has none); on a GPU machine run ``pytest tests -k cuda``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import batchnorm_layers, load_artifact
from tests.training.test_running_stats_ema import CASES, capture_bn_inputs, numpy_ema
from training import TrainConfig, build_model, export_artifact, fit, load_data, split_dataset, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_running_stats_trained_on_cuda_equal_the_numpy_ema_of_the_training_batches(
    tmp_path: Path, case: str
) -> None:
    options = dict(CASES[case])
    rows = options.pop("rows")
    cfg = TrainConfig(out_dir=str(tmp_path / case), progress=False, device="cuda", **options)
    train_ds, val_ds = split_dataset(load_data(cfg), val_fraction=cfg.val_fraction, seed=cfg.seed)
    train_ds = train_ds.subset(np.arange(rows))
    model, layers = build_model(cfg, train_ds)
    bn_inputs = capture_bn_inputs(model)

    metrics = fit(model, train_ds, val_ds, cfg, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    artifact = load_artifact(export_artifact(cfg, model, layers, train_ds, val_ds, metrics, device="cuda"))

    state = artifact.model.state_dict()
    assert list(bn_inputs) == [name for name, _ in batchnorm_layers(artifact.model)]
    for name, batches in bn_inputs.items():
        expected_mean, expected_var = numpy_ema(batches, cfg.bn_momentum)
        np.testing.assert_allclose(
            state[f"{name}.running_mean"].double().numpy(), expected_mean, rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            state[f"{name}.running_var"].double().numpy(), expected_var, rtol=1e-4, atol=1e-5
        )
        assert int(state[f"{name}.num_batches_tracked"]) == len(batches)


@pytest.mark.parametrize(("dataset", "bar"), [("breast_cancer", 0.93), ("digits", 0.95)])
def test_auto_device_trains_on_cuda_and_the_artifact_loads_on_the_cpu_with_its_accuracy(
    tmp_path: Path, dataset: str, bar: float
) -> None:
    path = train(TrainConfig(dataset=dataset, out_dir=str(tmp_path / dataset), progress=False))  # device auto

    artifact = load_artifact(path, device="cpu")  # canaries checked on the CPU

    record = artifact.manifest.training
    assert record["device"].startswith("cuda")
    assert artifact.manifest.metrics["val_accuracy"] >= bar
    cfg = TrainConfig(dataset=dataset)
    _, val = split_dataset(load_data(cfg), val_fraction=record["val_fraction"], seed=record["seed"])
    with torch.inference_mode():
        predicted = artifact.model(torch.from_numpy(val.features)).argmax(dim=1).numpy()
    accuracy = float((predicted == val.target).mean())
    assert accuracy == pytest.approx(artifact.manifest.metrics["val_accuracy"], abs=1 / len(val.target))
