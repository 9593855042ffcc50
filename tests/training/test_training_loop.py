"""The loop: every row in every epoch, no crash on a last batch of one row, and divergence caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training import TrainConfig, TrainingDivergedError, build_model, fit, load_data, split_dataset, train
from training.engine import epoch_batches


def bn_batch_sizes(model: nn.Module) -> list[int]:
    """Records the batch size every training-mode forward pass of the first BN layer sees."""
    sizes: list[int] = []
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d))
    bn.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])) if module.training else None)
    return sizes


def test_a_last_batch_of_one_row_is_merged_into_the_previous_batch() -> None:
    generator = torch.Generator().manual_seed(0)

    batches = epoch_batches(65, 16, generator, torch.device("cpu"))

    assert [len(b) for b in batches] == [16, 16, 16, 17]
    assert sorted(torch.cat(batches).tolist()) == list(range(65))


def test_training_with_a_last_batch_of_one_row_does_not_crash_and_sees_every_row() -> None:
    cfg = TrainConfig(dataset="breast_cancer", hidden=(8,), epochs=2, batch_size=16, progress=False)
    train_ds, val_ds = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)
    train_ds = train_ds.subset(np.arange(65))  # 65 % 16 == 1
    model, _ = build_model(cfg, train_ds)
    sizes = bn_batch_sizes(model)

    metrics = fit(model, train_ds, val_ds, cfg, device="cpu")

    assert sizes == [16, 16, 16, 17] * 2
    assert np.isfinite(list(metrics.values())).all()


def test_a_nan_weight_raises_training_diverged_error() -> None:
    cfg = TrainConfig(dataset="wine", hidden=(8,), epochs=2, progress=False)
    train_ds, val_ds = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)
    model, _ = build_model(cfg, train_ds)
    with torch.no_grad():
        model.get_submodule("fc1").weight[0, 0] = float("nan")

    with pytest.raises(TrainingDivergedError, match=r"epoch 1: the training loss is nan.*bn1\.running_mean"):
        fit(model, train_ds, val_ds, cfg, device="cpu")


@pytest.mark.parametrize("dataset", ["breast_cancer", "diabetes"])
def test_a_huge_learning_rate_aborts_and_writes_no_artifact(tmp_path: Path, dataset: str) -> None:
    out_dir = tmp_path / "never"
    cfg = TrainConfig(dataset=dataset, hidden=(16,), epochs=3, lr=1e30, out_dir=str(out_dir), progress=False)

    with pytest.raises(
        TrainingDivergedError, match=r"No artifact was written; try a lower learning rate \(lr was 1e\+30\)"
    ):
        train(cfg)

    assert not out_dir.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


def test_fit_gives_eval_mode_metrics_for_both_splits() -> None:
    cfg = TrainConfig(dataset="iris", hidden=(16,), epochs=2, progress=False)
    train_ds, val_ds = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)
    model, _ = build_model(cfg, train_ds)

    metrics = fit(model, train_ds, val_ds, cfg, device="cpu")

    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= metrics.keys()
    assert not model.training
    with torch.inference_mode():
        predicted = model(torch.from_numpy(val_ds.features)).argmax(1).numpy()
    assert metrics["val_accuracy"] == pytest.approx(np.mean(predicted == val_ds.target))


def test_fit_restores_the_callers_thread_count() -> None:
    before = torch.get_num_threads()
    cfg = TrainConfig(dataset="iris", hidden=(4,), epochs=1, threads=1, progress=False)
    train_ds, val_ds = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)

    fit(build_model(cfg, train_ds)[0], train_ds, val_ds, cfg, device="cpu")

    assert torch.get_num_threads() == before
