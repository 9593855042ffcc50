"""``--bn-stats precise``: each BN layer holds the population statistics of what it sees at inference.

For every BN layer, the reloaded (frozen, eval-mode) network is run over the whole training split and
the layer's input captured; numpy's per-channel mean and population variance (ddof=0, over N rows, or
N·H·W values for BatchNorm2d) of it must be what the artifact stores. The earlier layers then already use
their precise statistics, which is the documented definition.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models import batchnorm_layers, load_artifact
from models.manifest import Manifest
from training import TrainConfig, load_data, split_dataset, train
from training.cli import main
from training.precise_bn import recompute_bn_statistics

CASES: dict[str, dict[str, Any]] = {
    "mlp_with_dropout": {"dataset": "breast_cancer", "hidden": (16, 8), "epochs": 2, "dropout": 0.3},
    "mlp_bn_after_activation": {
        "dataset": "wine",
        "hidden": (8, 8),
        "epochs": 3,
        "batch_size": 16,
        "bn_position": "after_activation",
    },
    "cnn": {"dataset": "digits", "channels": (4, 8), "epochs": 1},
}


def trained(tmp_path: Path, case: str, bn_stats: str) -> Path:
    cfg = TrainConfig(
        out_dir=str(tmp_path / f"{case}-{bn_stats}"),
        progress=False,
        device="cpu",
        bn_stats=bn_stats,
        **CASES[case],
    )
    return train(cfg)


def training_split(manifest: Manifest) -> np.ndarray:
    t = manifest.training
    train_ds, _ = split_dataset(
        load_data(TrainConfig(dataset=t["dataset"])), val_fraction=t["val_fraction"], seed=t["seed"]
    )
    return train_ds.features


def inference_inputs(model: nn.Module, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Gives back, per BN layer, its float64 input over ``rows`` in eval mode, as (values, channels)."""
    seen: dict[str, np.ndarray] = {}
    handles = []
    for name, bn in batchnorm_layers(model):

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            x = args[0].double().numpy()
            seen[name] = np.moveaxis(x, 1, -1).reshape(
                -1, x.shape[1]
            )  # (N, C) or (N, C, H, W) -> (values, C)

        handles.append(bn.register_forward_pre_hook(hook))
    with torch.inference_mode():
        model(torch.from_numpy(rows))
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("case", list(CASES))
def test_precise_statistics_are_the_numpy_population_mean_and_variance_of_each_layers_inference_input(
    tmp_path: Path, case: str
) -> None:
    artifact = load_artifact(trained(tmp_path, case, "precise"))

    rows = training_split(artifact.manifest)
    state = artifact.model.state_dict()
    inputs = inference_inputs(artifact.model, rows)
    assert list(inputs) == [b.name for b in artifact.batchnorm]
    for name, values in inputs.items():
        assert len(values) == len(rows) * (64 if case == "cnn" else 1)  # conv: N·H·W on 8x8 feature maps
        np.testing.assert_allclose(
            state[f"{name}.running_mean"].numpy(), values.mean(axis=0), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            state[f"{name}.running_var"].numpy(), values.var(axis=0), rtol=1e-5, atol=1e-6
        )
    assert {b.statistics for b in artifact.batchnorm} == {"precise"}


def test_the_manifest_says_precise_with_the_emas_gap_and_only_the_statistics_changed(tmp_path: Path) -> None:
    ema = load_artifact(trained(tmp_path, "mlp_with_dropout", "ema"))
    precise = load_artifact(trained(tmp_path, "mlp_with_dropout", "precise"))

    assert ema.manifest.bn_statistics.model_dump() == {"kind": "ema", "world_size": 1, "ema_gap": None}
    stats = precise.manifest.bn_statistics
    assert (stats.kind, stats.world_size) == ("precise", 1)
    before, after = ema.model.state_dict(), precise.model.state_dict()
    for key in before:  # same seed, same training: only running_mean and running_var were recomputed
        if key.endswith(("running_mean", "running_var")):
            assert not torch.equal(before[key], after[key]), key
        else:
            assert torch.equal(before[key], after[key]), key
    assert stats.ema_gap is not None
    assert [g.layer for g in stats.ema_gap] == ["bn1", "bn2"]
    for gap in stats.ema_gap:
        eps = 1e-5
        m0, v0 = (before[f"{gap.layer}.{s}"].double() for s in ("running_mean", "running_var"))
        m1, v1 = (after[f"{gap.layer}.{s}"].double() for s in ("running_mean", "running_var"))
        assert gap.max_abs_mean_shift == pytest.approx(
            float(((m0 - m1).abs() / (v1 + eps).sqrt()).max()), rel=1e-4
        )
        assert gap.max_abs_log_var_ratio == pytest.approx(
            float(((v0 + eps) / (v1 + eps)).log().abs().max()), rel=1e-4
        )
        assert gap.max_abs_log_var_ratio > 0.01  # dropout before bn2 makes the EMA's variance visibly off


def test_precise_metrics_describe_the_exported_network_and_the_emas_are_kept(tmp_path: Path) -> None:
    ema = load_artifact(trained(tmp_path, "mlp_with_dropout", "ema")).manifest.metrics
    precise = load_artifact(trained(tmp_path, "mlp_with_dropout", "precise"))

    m = precise.manifest.metrics
    assert m["ema_val_loss"] == ema["val_loss"] and m["ema_val_accuracy"] == ema["val_accuracy"]
    t = precise.manifest.training
    _, val = split_dataset(
        load_data(TrainConfig(dataset=t["dataset"])), val_fraction=t["val_fraction"], seed=t["seed"]
    )
    with torch.inference_mode():
        predicted = precise.model(torch.from_numpy(val.features)).argmax(dim=1).numpy()
    assert m["val_accuracy"] == pytest.approx(float((predicted == val.target).mean()))


def test_precise_statistics_do_not_depend_on_how_the_rows_are_split_into_forward_passes(
    breast_cancer_artifact: Path,
) -> None:
    artifact = load_artifact(breast_cancer_artifact)
    rows = training_split(artifact.manifest)
    whole, chunked = artifact.model, copy.deepcopy(artifact.model)

    recompute_bn_statistics(whole, rows, device=torch.device("cpu"))
    recompute_bn_statistics(chunked, rows, device=torch.device("cpu"), chunk_rows=7)

    for key, value in whole.state_dict().items():
        torch.testing.assert_close(chunked.state_dict()[key], value, rtol=1e-6, atol=1e-7)


def test_the_summary_prints_which_statistics_the_buffers_hold_and_the_gap_per_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quick = ["--dataset", "wine", "--hidden", "8,8", "--epochs", "2", "--device", "cpu", "--no-progress"]

    main([*quick, "--out", str(tmp_path / "ema")])
    ema_out = capsys.readouterr().out
    main([*quick, "--out", str(tmp_path / "precise"), "--bn-stats", "precise"])
    precise_out = capsys.readouterr().out

    assert "BN statistics: ema (running average of the training batches; 1 rank)" in ema_out
    assert "BN statistics: precise (population over the training split; 1 rank)" in precise_out
    gap = load_artifact(tmp_path / "precise").manifest.bn_statistics.ema_gap
    assert gap is not None
    for g in gap:
        assert f"{g.layer} {g.max_abs_mean_shift:.3f}σ / {g.max_abs_log_var_ratio:.3f}" in precise_out


def test_an_unknown_bn_stats_choice_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--bn-stats", "exact"])

    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'exact'" in err and "'ema'" in err and "'precise'" in err


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_sync_bn_without_cuda_is_refused_before_training_with_what_to_use_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("auto picks CUDA here, where SyncBatchNorm runs")
    missing = tmp_path / "not-there.csv"  # never read: the refusal comes first

    with pytest.raises(SystemExit) as e:
        main(
            [
                "--csv",
                str(missing),
                "--target",
                "y",
                "--sync-bn",
                "--device",
                device,
                "--out",
                str(tmp_path / "o"),
            ]
        )

    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "sync_bn needs CUDA, but this run trains on cpu" in err
    assert "SyncBatchNorm" in err and "--bn-stats precise" in err
    assert not (tmp_path / "o").exists()
