"""The dataset as arrays: what both the built-in sets (training/data.py) and CSV files (training/csvfile.py) give back."""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Literal

import numpy as np

# Below this a validation metric means nothing and BN batches are too small to estimate a variance.
MIN_ROWS = 10


@dataclass
class Dataset:
    features: np.ndarray  # (N, F) float32, raw units
    target: np.ndarray  # (N,) int64 index into class_labels, or float32 value for regression
    feature_names: list[str]
    class_labels: list[str] | None  # classification: label of class i; regression: None
    task: Literal["classification", "regression"]
    target_name: str
    input_shape: tuple[int, ...]  # one row before flattening: (F,) for tables, (C, H, W) for images
    name: str = "dataset"

    def __post_init__(self) -> None:
        n, f = self.features.shape
        if self.target.shape != (n,):
            raise ValueError(f"target must have shape ({n},) to match the features, got {self.target.shape}")
        if len(self.feature_names) != f or prod(self.input_shape) != f:
            raise ValueError(
                f"{f} feature columns but {len(self.feature_names)} feature names and input_shape {self.input_shape}"
            )

    def __len__(self) -> int:
        return len(self.features)

    @property
    def num_outputs(self) -> int:
        return len(self.class_labels) if self.class_labels is not None else 1

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def subset(self, indices: np.ndarray) -> Dataset:
        """Gives back the rows at ``indices``, in that order."""
        return replace(self, features=self.features[indices], target=self.target[indices])
