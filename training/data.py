"""Datasets as arrays: the built-in scikit-learn sets or the user's CSV, and the train/validation split.

dataset = load_data(TrainConfig(dataset="wine"))
train, val = split_dataset(dataset, val_fraction=0.2, seed=0)   # stratified for classification
train.features   # (N, F) float32, raw units: standardization belongs to the model
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from training.csvfile import read_csv
from training.dataset import MIN_ROWS, Dataset
from training.errors import ConfigError, DataError

if TYPE_CHECKING:
    from training.config import TrainConfig

# dataset name -> (scikit-learn loader, target name)
_BUILTIN = {
    "breast_cancer": ("load_breast_cancer", "diagnosis"),
    "wine": ("load_wine", "cultivar"),
    "iris": ("load_iris", "species"),
    "digits": ("load_digits", "digit"),
    "diabetes": ("load_diabetes", "progression"),
}


def load_data(cfg: TrainConfig) -> Dataset:
    """Gives back the dataset ``cfg`` names: its CSV file when given, else the built-in one."""
    if cfg.csv is not None:
        return read_csv(cfg.csv, target=cfg.target, task=cfg.task)
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


def split_dataset(dataset: Dataset, *, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Gives back ``(train, val)``: the same rows for the same seed, stratified by class for classification.

    Each class puts ``round(count * val_fraction)`` rows (at least 1, never all) into validation, so class
    proportions match within one row; rows keep their original order within each split.
    """
    if len(dataset) < MIN_ROWS:
        raise DataError(f"need at least {MIN_ROWS} rows, got {len(dataset)}")
    rng = np.random.default_rng(seed)
    if dataset.class_labels is None:
        n = len(dataset)
        order = rng.permutation(n)
        n_val = min(max(int(n * val_fraction + 0.5), 1), n - 2)
        val_idx, train_idx = order[:n_val], order[n_val:]
    else:
        counts = np.bincount(dataset.target, minlength=len(dataset.class_labels))
        for label, count in zip(dataset.class_labels, counts, strict=True):
            if count == 1:
                raise DataError(
                    f"class {label!r} has a single member; stratified split needs at least 2 per class"
                )
        val_parts, train_parts = [], []
        for c in np.flatnonzero(counts):
            rows = rng.permutation(np.flatnonzero(dataset.target == c))
            n_val = min(max(int(len(rows) * val_fraction + 0.5), 1), len(rows) - 1)
            val_parts.append(rows[:n_val])
            train_parts.append(rows[n_val:])
        val_idx, train_idx = np.concatenate(val_parts), np.concatenate(train_parts)
    if len(train_idx) < 2:
        raise DataError(
            f"need at least 2 training rows after the split, got {len(train_idx)} of {len(dataset)}"
        )
    return dataset.subset(np.sort(train_idx)), dataset.subset(np.sort(val_idx))
