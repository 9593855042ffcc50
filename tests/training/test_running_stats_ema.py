"""The exported BN statistics are exactly PyTorch's EMA over the batches training showed each BN layer.

For every BN layer and every training-mode batch ``x`` it saw (captured with a forward pre-hook)::

    running_mean = (1 - m) * running_mean + m * mean(x)          # per channel, starting at 0
    running_var  = (1 - m) * running_var  + m * var(x, ddof=1)   # unbiased, starting at 1

computed here independently in float64 numpy, then compared with the tensors in the saved artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from models import batchnorm_layers, load_artifact
from training import TrainConfig, build_model, export_artifact, fit, load_data, split_dataset

CASES: dict[str, dict[str, Any]] = {
    # 129 % 32 == 1: the merged last batch must count as one batch of 33 rows
    "mlp": {"dataset": "breast_cancer", "hidden": (16, 8), "epochs": 3, "batch_size": 32, "rows": 129},
    "mlp_bn_after_activation": {
        "dataset": "wine",
        "hidden": (8,),
        "epochs": 3,
        "batch_size": 16,
        "rows": 100,
        "bn_position": "after_activation",
    },
    # small batches: with N*H*W rows per channel the unbiased correction must still be visible
    "cnn": {"dataset": "digits", "channels": (4, 8), "epochs": 2, "batch_size": 8, "rows": 161},
}


def capture_bn_inputs(model: nn.Module) -> dict[str, list[np.ndarray]]:
    """Gives back, per BN layer name, the float64 copy of every input it gets in training mode."""
    seen: dict[str, list[np.ndarray]] = {}
    for name, bn in batchnorm_layers(model):
        batches = seen.setdefault(name, [])

        def hook(module: nn.Module, args: tuple, batches: list[np.ndarray] = batches) -> None:
            if module.training:
                batches.append(args[0].detach().cpu().double().numpy().copy())

        bn.register_forward_pre_hook(hook)
    return seen


def numpy_ema(batches: list[np.ndarray], momentum: float) -> tuple[np.ndarray, np.ndarray]:
    channels = batches[0].shape[1]
    mean, var = np.zeros(channels), np.ones(channels)
    for x in batches:
        per_channel = np.moveaxis(x, 1, -1).reshape(-1, channels)  # (N, C) or (N, C, H, W) -> (rows, C)
        mean = (1 - momentum) * mean + momentum * per_channel.mean(axis=0)
        var = (1 - momentum) * var + momentum * per_channel.var(axis=0, ddof=1)
    return mean, var


@pytest.mark.parametrize("momentum", [0.1, 0.3])
@pytest.mark.parametrize("case", list(CASES))
def test_exported_running_stats_equal_the_numpy_ema_of_the_training_batches(
    tmp_path: Path, case: str, momentum: float
) -> None:
    options = dict(CASES[case])
    rows = options.pop("rows")
    cfg = TrainConfig(bn_momentum=momentum, out_dir=str(tmp_path / case), progress=False, **options)
    train_ds, val_ds = split_dataset(load_data(cfg), val_fraction=cfg.val_fraction, seed=cfg.seed)
    train_ds = train_ds.subset(np.arange(rows))
    model, layers = build_model(cfg, train_ds)
    bn_inputs = capture_bn_inputs(model)

    metrics = fit(model, train_ds, val_ds, cfg, device="cpu")
    artifact = load_artifact(export_artifact(cfg, model, layers, train_ds, val_ds, metrics, device="cpu"))

    state = artifact.model.state_dict()
    kind = "BatchNorm2d" if case == "cnn" else "BatchNorm1d"
    assert [type(m).__name__ for _, m in batchnorm_layers(artifact.model)] == [kind] * len(bn_inputs)
    for name, batches in bn_inputs.items():
        assert len(batches) == cfg.epochs * (rows // cfg.batch_size + (rows % cfg.batch_size > 1))
        expected_mean, expected_var = numpy_ema(batches, momentum)
        np.testing.assert_allclose(
            state[f"{name}.running_mean"].double().numpy(), expected_mean, rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            state[f"{name}.running_var"].double().numpy(), expected_var, rtol=1e-4, atol=1e-5
        )
        assert int(state[f"{name}.num_batches_tracked"]) == len(batches)
    assert {b.name: b.momentum for b in artifact.batchnorm} == dict.fromkeys(bn_inputs, momentum)
