"""Training on two gloo processes on the CPU: torchrun, DDP's EMA, precise statistics and failing ranks.

Every test starts real processes (two ranks importing torch on a 2-core machine: several seconds each),
so they are all marked slow; CI runs them. The launch helpers are in tests/ranks.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import batchnorm_layers, load_artifact
from tests.ranks import by_hand, torchrun, training_args
from training import TrainConfig, load_data, split_dataset
from training.precise_bn import recompute_bn_statistics

pytestmark = pytest.mark.slow

WORKER = ["-m", "tests.training.ddp_worker"]


def val_accuracy(artifact_dir: Path) -> tuple[float, float]:
    """Gives back the reloaded network's validation accuracy, recomputed here, and the manifest's."""
    artifact = load_artifact(artifact_dir)
    t = artifact.manifest.training
    _, val = split_dataset(
        load_data(TrainConfig(dataset=t["dataset"])), val_fraction=t["val_fraction"], seed=t["seed"]
    )
    with torch.inference_mode():
        predicted = artifact.model(torch.from_numpy(val.features)).argmax(dim=1).numpy()
    return float((predicted == val.target).mean()), artifact.manifest.metrics["val_accuracy"]


@pytest.mark.parametrize(
    ("dataset", "bar", "bn_stats"), [("breast_cancer", 0.95, "ema"), ("digits", 0.95, "precise")]
)
def test_two_ranks_under_torchrun_write_one_artifact_that_meets_the_one_process_bar(
    tmp_path: Path, dataset: str, bar: float, bn_stats: str
) -> None:
    out = tmp_path / "artifacts" / dataset

    result = torchrun(["--dataset", dataset, "--out", str(out), "--bn-stats", bn_stats])

    assert result.returncode == 0, result.stderr
    assert os.listdir(out.parent) == [dataset]  # one artifact, no temporary directory left
    assert result.stdout.count("trained in") == 1  # only rank 0 printed the summary
    assert f"BN statistics: {bn_stats}" in result.stdout and "2 ranks" in result.stdout
    recomputed, recorded = val_accuracy(out)
    assert recomputed == pytest.approx(recorded) and recorded >= bar
    stats = load_artifact(out).manifest.bn_statistics
    assert (stats.kind, stats.world_size) == (bn_stats, 2)


def test_the_ddp_ema_is_rank_0s_running_average_and_every_rank_ends_with_it(tmp_path: Path) -> None:
    results = by_hand([[*WORKER, "ema", str(tmp_path)]] * 2)

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    state = load_artifact(tmp_path / "artifact").model.state_dict()
    rank0, rank1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for name in ("bn1", "bn2"):
        # each rank trained on its own half of every global batch of 32 (129 rows, 4 batches an epoch)
        assert int(rank0[f"{name}.rows"]) + int(rank1[f"{name}.rows"]) == 3 * 129
        assert int(rank0[f"{name}.batches"]) == int(state[f"{name}.num_batches_tracked"]) == 12
        for stat, ema in (("running_mean", "ema_mean"), ("running_var", "ema_var")):
            exported = state[f"{name}.{stat}"].double().numpy()
            np.testing.assert_allclose(exported, rank0[f"{name}.{ema}"], rtol=1e-4, atol=1e-5)
            assert np.abs(exported - rank1[f"{name}.{ema}"]).max() > 1e-3  # rank 1's own EMA is not it
            for rank in (rank0, rank1):  # every rank holds exactly what was exported
                np.testing.assert_array_equal(rank[f"{name}.{stat}"], state[f"{name}.{stat}"].numpy())


def test_precise_statistics_from_one_and_two_ranks_agree_within_1e_5(
    tmp_path: Path, breast_cancer_artifact: Path
) -> None:
    results = by_hand([[*WORKER, "precise", str(breast_cancer_artifact), str(tmp_path)]] * 2)

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    alone = load_artifact(breast_cancer_artifact)
    t = alone.manifest.training
    train_ds, _ = split_dataset(
        load_data(TrainConfig(dataset=t["dataset"])), val_fraction=t["val_fraction"], seed=t["seed"]
    )
    recompute_bn_statistics(alone.model, train_ds.features, device=torch.device("cpu"))
    one_rank = alone.model.state_dict()
    ema = load_artifact(breast_cancer_artifact).model.state_dict()
    for rank in (np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")):
        for name, _ in batchnorm_layers(alone.model):
            for stat in ("running_mean", "running_var"):
                two_ranks, single = rank[f"{name}.{stat}"], one_rank[f"{name}.{stat}"].numpy()
                np.testing.assert_allclose(two_ranks, single, rtol=1e-5, atol=1e-5)
                assert np.abs(single - ema[f"{name}.{stat}"].numpy()).max() > 1e-3  # they were recomputed


def test_a_rank_failing_mid_training_stops_every_rank_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "artifacts" / "bc"
    args = training_args("--dataset", "breast_cancer", "--epochs", "3", "--out", str(out))

    results = by_hand([args, args], env={"BNSERVE_TEST_FAULT": "1:10:error"})

    assert all(r.returncode != 0 for r in results), [r.returncode for r in results]
    assert "rank 1 of 2 failed: RuntimeError: injected failure at training step 10" in results[0].stderr
    assert "injected failure" in results[1].stderr  # and rank 1 says so itself, with its traceback
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_nan_on_one_rank_stops_every_rank_as_diverged_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "artifacts" / "bc"
    args = training_args("--dataset", "breast_cancer", "--epochs", "3", "--out", str(out))

    results = by_hand([args, args], env={"BNSERVE_TEST_FAULT": "1:3:nan"})

    assert [r.returncode for r in results] == [1, 1]
    assert "training diverged in epoch 1: the training loss is nan" in results[0].stderr
    assert results[1].stderr == ""  # rank 0 reports for everyone
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_torchrun_ends_every_rank_when_one_fails(tmp_path: Path) -> None:
    out = tmp_path / "artifacts" / "bc"

    result = torchrun(
        ["--dataset", "breast_cancer", "--epochs", "3", "--out", str(out)],
        env={"BNSERVE_TEST_FAULT": "0:5:error"},
    )

    assert result.returncode != 0
    assert "rank 0 of 2 failed: RuntimeError: injected failure at training step 5" in result.stderr
    assert not out.parent.exists() or os.listdir(out.parent) == []


def _csv(path: Path, bad_row: str | None = None) -> Path:
    rows = [f"{i % 7 + 0.5 * (i % 2)},{i % 5},{i % 2}" for i in range(40)]
    if bad_row is not None:
        rows[20] = bad_row
    path.write_text("a,b,sick\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("rank1_csv", "expected"),
    [
        ("bad", "bad.csv: feature column 'b' is not numeric (row 21: 'Paris')"),
        ("other", "this rank's training split"),
    ],
)
def test_bad_data_on_one_rank_is_reported_by_rank_0_and_nothing_is_written(
    tmp_path: Path, rank1_csv: str, expected: str
) -> None:
    good = _csv(tmp_path / "good.csv")
    other = _csv(tmp_path / f"{rank1_csv}.csv", bad_row="3,Paris,1" if rank1_csv == "bad" else "3,4,1")
    out = tmp_path / "artifacts" / "people"

    results = by_hand(
        [
            training_args(
                "--csv", str(csv), "--target", "sick", "--out", str(out), "--epochs", "2", "--batch-size", "8"
            )
            for csv in (good, other)
        ]
    )

    assert all(r.returncode != 0 for r in results)
    assert "rank 1 of 2 failed: " in results[0].stderr and expected in results[0].stderr, results[0].stderr
    assert results[1].stderr == ""
    assert not out.parent.exists()


def test_a_global_batch_too_small_for_two_rows_per_rank_is_refused_before_training(tmp_path: Path) -> None:
    args = training_args("--dataset", "wine", "--batch-size", "3", "--out", str(tmp_path / "w"))

    results = by_hand([args, args])

    assert [r.returncode for r in results] == [2, 1]
    assert "batch_size is the global batch, shared by all 2 ranks: it must be at least 4" in results[0].stderr
    assert not (tmp_path / "w").exists()
