"""Session fixtures shared by every package's tests: small artifacts trained once through ``training.train``.

They are trained for a few epochs only (a second or two each on a CPU) and are read-only by convention:
copy one before tampering with it. Accuracy targets are checked in tests/training/test_accuracy_targets.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training import TrainConfig, train


def _quick_artifact(tmp_path_factory: pytest.TempPathFactory, dataset: str, **options: Any) -> Path:
    out_dir = tmp_path_factory.mktemp("artifacts") / dataset
    return train(TrainConfig(dataset=dataset, out_dir=str(out_dir), device="cpu", progress=False, **options))


@pytest.fixture(scope="session")
def breast_cancer_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP classifier (30 features, 2 classes: malignant, benign); about 0.96 validation accuracy."""
    return _quick_artifact(tmp_path_factory, "breast_cancer", epochs=3, hidden=(32, 32))


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNN classifier on 8x8 images sent as 64 pixel values (input_shape [1, 8, 8], 10 classes)."""
    return _quick_artifact(tmp_path_factory, "digits", epochs=2, channels=(8, 16))


@pytest.fixture(scope="session")
def diabetes_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP regressor (10 features) whose ``output_scale`` layer gives predictions in real units."""
    return _quick_artifact(tmp_path_factory, "diabetes", epochs=3, hidden=(32, 32))


@pytest.fixture(scope="session")
def table_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP classifier trained on the mixed CSV of tests/mixed_table.py (numeric, text, boolean, constant
    columns, every missing token; the id dropped): 6 features, 17 input columns through its preprocessing."""
    from tests.mixed_table import TARGET, write_mixed_csv

    root = tmp_path_factory.mktemp("table")
    cfg = TrainConfig(
        csv=str(write_mixed_csv(root / "customers.csv")),
        target=TARGET,
        drop=("customer_id",),
        out_dir=str(root / "customers"),
        epochs=10,
        hidden=(32,),
        device="cpu",
        progress=False,
    )
    return train(cfg)
