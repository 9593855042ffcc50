"""Datasets as arrays: the built-in scikit-learn sets or the user's table, and the train/validation split.

dataset = load_data(TrainConfig(dataset="wine"))
dataset = load_data(TrainConfig(csv="churn.csv", target="churned"))   # also .parquet
dataset = load_data(TrainConfig(target="churned"), data=frame)          # a pandas DataFrame
train, val = split_dataset(dataset, val_fraction=0.2, seed=0)   # stratified for classification
train.features   # (N, F) float32, raw units: standardization belongs to the model

A table's features are its preprocessing's output (categories one-hot, missing values filled, missing
indicators), learned from the training split that ``split_dataset`` gives for the same seed.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.dataset import MIN_ROWS, Dataset
from training.errors import ConfigError, DataError
from training.tabular import TableOptions, describe_schema, encode_table, fit_preprocessing, read_table

if TYPE_CHECKING:
    import pandas as pd

    from training.config import TrainConfig

DATAFRAME_NAME = "dataframe"  # a DataFrame's dataset name: the default artifact name and directory

# dataset name -> (scikit-learn loader, target name)
_BUILTIN = {
    "breast_cancer": ("load_breast_cancer", "diagnosis"),
    "wine": ("load_wine", "cultivar"),
    "iris": ("load_iris", "species"),
    "digits": ("load_digits", "digit"),
    "diabetes": ("load_diabetes", "progression"),
}


def load_data(cfg: TrainConfig, data: pd.DataFrame | None = None) -> Dataset:
    """Gives back the dataset ``cfg`` names: the DataFrame ``data`` or the CSV / Parquet file when given,
    else the built-in one. A table's schema is printed."""
    if data is not None or cfg.csv is not None:
        return load_table(cfg, data)
    if cfg.target is not None:
        raise ConfigError(
            f"target {cfg.target!r} only applies to your own data: give a CSV file or a DataFrame"
        )
    dataset = load_builtin(cfg.dataset)
    if cfg.task not in ("auto", dataset.task):
        raise ConfigError(
            f"{cfg.dataset} is a {dataset.task} dataset; task {cfg.task!r} does not apply to it"
        )
    return dataset


def load_builtin(name: str) -> Dataset:
    """Gives back one of the datasets scikit-learn ships with (read from its package, never downloaded)."""
    if name not in _BUILTIN:
        raise ConfigError(f"dataset must be one of {list(_BUILTIN)}, got {name!r}")
    # Imported here: scikit-learn takes a second to import and CSV runs do not need it.
    from sklearn import datasets

    loader, target_name = _BUILTIN[name]
    bunch = getattr(datasets, loader)()
    features = np.asarray(bunch.data, dtype=np.float32)
    feature_names = [str(n) for n in bunch.feature_names]
    input_shape = (1, *bunch.images.shape[1:]) if name == "digits" else (features.shape[1],)
    if name == "diabetes":
        target, class_labels = np.asarray(bunch.target, dtype=np.float32), None
    else:
        target, class_labels = np.asarray(bunch.target, dtype=np.int64), [str(t) for t in bunch.target_names]
    return Dataset(
        features=features,
        target=target,
        feature_names=feature_names,
        class_labels=class_labels,
        task="regression" if class_labels is None else "classification",
        target_name=target_name,
        input_shape=input_shape,
        name=name,
    )


def load_table(cfg: TrainConfig, data: pd.DataFrame | None) -> Dataset:
    """Gives back a table's dataset: typed columns, the preprocessing fitted on the training split that
    ``split_dataset`` gives for ``cfg.seed``, every row encoded by it; prints the schema."""
    options = TableOptions(**{f.name: getattr(cfg, f.name) for f in fields(TableOptions)})  # same names
    table = read_table(
        data if data is not None else str(cfg.csv), target=cfg.target, task=cfg.task, options=options
    )
    train_idx, _ = split_indices(
        table.target, table.class_labels, val_fraction=cfg.val_fraction, seed=cfg.seed
    )
    pre = fit_preprocessing(table, train_idx, options)
    print(describe_schema(table, pre), flush=True)
    return Dataset(
        features=encode_table(table, pre),
        target=table.target,
        feature_names=table.feature_names,
        class_labels=table.class_labels,
        task=table.task,
        target_name=table.target_name,
        input_shape=(len(table.columns),),
        name=Path(cfg.csv).stem if data is None and cfg.csv is not None else DATAFRAME_NAME,
        preprocessing=pre,
        table=table,
        row_ids=np.arange(len(table)),
    )


def split_dataset(dataset: Dataset, *, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Gives back ``(train, val)``: the same rows for the same seed, stratified by class for classification."""
    train_idx, val_idx = split_indices(
        dataset.target, dataset.class_labels, val_fraction=val_fraction, seed=seed
    )
    return dataset.subset(train_idx), dataset.subset(val_idx)


def split_indices(
    target: np.ndarray, class_labels: list[str] | None, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gives back the sorted row indices ``(train, val)``: the same for the same seed and target.

    Each class puts ``round(count * val_fraction)`` rows (at least 1, never all) into validation, so class
    proportions match within one row; rows keep their original order within each split.
    """
    n = len(target)
    if n < MIN_ROWS:
        raise DataError(f"need at least {MIN_ROWS} rows, got {n}")
    rng = np.random.default_rng(seed)
    if class_labels is None:
        order = rng.permutation(n)
        n_val = min(max(int(n * val_fraction + 0.5), 1), n - 2)
        val_idx, train_idx = order[:n_val], order[n_val:]
    else:
        counts = np.bincount(target, minlength=len(class_labels))
        for label, count in zip(class_labels, counts, strict=True):
            if count == 1:
                raise DataError(
                    f"class {label!r} has a single member; stratified split needs at least 2 per class"
                )
        val_parts, train_parts = [], []
        for c in np.flatnonzero(counts):
            rows = rng.permutation(np.flatnonzero(target == c))
            n_val = min(max(int(len(rows) * val_fraction + 0.5), 1), len(rows) - 1)
            val_parts.append(rows[:n_val])
            train_parts.append(rows[n_val:])
        val_idx, train_idx = np.concatenate(val_parts), np.concatenate(train_parts)
    if len(train_idx) < 2:
        raise DataError(f"need at least 2 training rows after the split, got {len(train_idx)} of {n}")
    return np.sort(train_idx), np.sort(val_idx)
