"""The default settings reach the accuracy targets on the CPU, and the exported network reproduces them.

Each case trains the full built-in dataset with ``TrainConfig`` defaults (a few seconds on one CPU core;
the times are printed, see them with ``pytest -s``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models import load_artifact
from training import TrainConfig, load_data, split_dataset, train

TARGETS = [
    ("breast_cancer", "val_accuracy", 0.95),
    ("wine", "val_accuracy", 0.93),
    ("digits", "val_accuracy", 0.95),
    ("iris", "val_accuracy", 0.85),
    ("diabetes", "val_r2", 0.3),
]


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "metric", "target"), TARGETS)
def test_default_training_reaches_the_target_and_the_artifact_reproduces_it(
    tmp_path: Path, dataset: str, metric: str, target: float
) -> None:
    cfg = TrainConfig(dataset=dataset, device="cpu", out_dir=str(tmp_path / dataset), progress=False)

    started = time.perf_counter()
    artifact = load_artifact(train(cfg))
    seconds = time.perf_counter() - started

    m = artifact.manifest
    print(
        f"{dataset}: {metric} {m.metrics[metric]:.4f} in {seconds:.1f} s ({m.metrics['train_seconds']:.1f} s fit)"
    )
    assert m.metrics[metric] >= target
    assert seconds < 45
    _, val = split_dataset(load_data(cfg), val_fraction=cfg.val_fraction, seed=cfg.seed)
    with torch.inference_mode():
        out = artifact.model(torch.from_numpy(val.features)).numpy()  # the frozen, reloaded network
    if m.task == "classification":
        assert np.mean(out.argmax(1) == val.target) == pytest.approx(m.metrics["val_accuracy"])
    else:
        assert np.sqrt(np.mean((out[:, 0] - val.target) ** 2)) == pytest.approx(
            m.metrics["val_rmse"], rel=1e-4
        )
