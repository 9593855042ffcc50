"""Built-in datasets, the seeded stratified split, and the standardization written into the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import ConfigError, TrainConfig, build_model, load_data, split_dataset


@pytest.mark.parametrize(
    ("dataset", "rows", "features", "task", "input_shape"),
    [
        ("breast_cancer", 569, 30, "classification", (30,)),
        ("wine", 178, 13, "classification", (13,)),
        ("iris", 150, 4, "classification", (4,)),
        ("digits", 1797, 64, "classification", (1, 8, 8)),
        ("diabetes", 442, 10, "regression", (10,)),
    ],
)
def test_builtin_datasets_load_without_network_with_their_shapes(
    dataset: str, rows: int, features: int, task: str, input_shape: tuple[int, ...]
) -> None:
    ds = load_data(TrainConfig(dataset=dataset))

    assert ds.features.shape == (rows, features) and ds.features.dtype == np.float32
    assert (ds.task, ds.input_shape, len(ds.feature_names)) == (task, input_shape, features)
    assert ds.class_labels is None if task == "regression" else len(ds.class_labels or []) >= 2


def test_breast_cancer_is_the_default_dataset_with_named_classes() -> None:
    ds = load_data(TrainConfig())

    assert (ds.name, ds.class_labels, ds.target_name) == (
        "breast_cancer",
        ["malignant", "benign"],
        "diagnosis",
    )


def test_a_task_that_contradicts_a_builtin_dataset_is_refused() -> None:
    with pytest.raises(ConfigError, match="wine is a classification dataset"):
        load_data(TrainConfig(dataset="wine", task="regression"))


def test_the_same_seed_gives_the_same_split_and_another_seed_a_different_one() -> None:
    ds = load_data(TrainConfig(dataset="wine"))

    train_a, val_a = split_dataset(ds, val_fraction=0.2, seed=7)
    train_b, val_b = split_dataset(ds, val_fraction=0.2, seed=7)
    _, val_c = split_dataset(ds, val_fraction=0.2, seed=8)

    np.testing.assert_array_equal(train_a.features, train_b.features)
    np.testing.assert_array_equal(val_a.features, val_b.features)
    assert not np.array_equal(val_a.features, val_c.features)
    assert len(train_a) + len(val_a) == len(ds)
    all_rows = {tuple(r) for r in np.concatenate([train_a.features, val_a.features])}
    assert all_rows == {tuple(r) for r in ds.features}  # a partition: nothing lost, nothing duplicated


@pytest.mark.parametrize(
    ("dataset", "val_fraction"), [("wine", 0.2), ("breast_cancer", 0.25), ("digits", 0.1)]
)
def test_the_split_keeps_each_class_proportion_within_one_row(dataset: str, val_fraction: float) -> None:
    ds = load_data(TrainConfig(dataset=dataset))

    _, val = split_dataset(ds, val_fraction=val_fraction, seed=3)

    counts, val_counts = np.bincount(ds.target), np.bincount(val.target, minlength=len(ds.class_labels or []))
    assert np.all(np.abs(val_counts - counts * val_fraction) <= 1)


def test_input_standardization_comes_from_the_training_split_only() -> None:
    cfg = TrainConfig(dataset="breast_cancer", hidden=(8,))
    train, val = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)

    model, _ = build_model(cfg, train)

    norm = model.get_submodule("input_norm")
    torch.testing.assert_close(norm.mean, torch.from_numpy(train.features.astype(np.float64).mean(0)).float())
    torch.testing.assert_close(norm.std, torch.from_numpy(train.features.astype(np.float64).std(0)).float())
    assert not np.allclose(norm.mean.numpy(), val.features.mean(0), rtol=1e-4)


def test_constant_pixels_get_std_one_so_standardized_digits_stay_finite() -> None:
    cfg = TrainConfig(dataset="digits", channels=(4, 4))
    train, val = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)
    constant = train.features.max(0) == train.features.min(0)
    assert constant.any()  # digits has blank border pixels: the case this test is about

    model, _ = build_model(cfg, train)

    norm = model.get_submodule("input_norm")
    assert torch.all(norm.std[torch.from_numpy(constant)] == 1)
    with torch.inference_mode():
        assert torch.isfinite(norm(torch.from_numpy(val.features))).all()


def test_regression_target_std_and_mean_go_into_the_output_scale_layer() -> None:
    cfg = TrainConfig(dataset="diabetes", hidden=(8,))
    train, _ = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)

    model, _ = build_model(cfg, train)

    rescale = model.get_submodule("output_scale")
    assert rescale.scale.item() == pytest.approx(float(train.target.astype(np.float64).std()), rel=1e-6)
    assert rescale.shift.item() == pytest.approx(float(train.target.astype(np.float64).mean()), rel=1e-6)


def test_a_cnn_is_refused_for_tabular_data() -> None:
    cfg = TrainConfig(dataset="breast_cancer", model="cnn")
    train, _ = split_dataset(load_data(cfg), val_fraction=0.2, seed=0)

    with pytest.raises(ConfigError, match="model 'cnn' needs image data"):
        build_model(cfg, train)
