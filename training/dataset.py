"""The dataset as arrays: what both the built-in sets and the user's tables (training/data.py) give back."""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.preprocessing import input_columns

if TYPE_CHECKING:
    from models.preprocessing import Preprocessing
    from training.tabular import Table

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
    # A table's: raw rows -> features. feature_names are then the table's columns, not the input columns.
    preprocessing: Preprocessing | None = None
    table: Table | None = None  # the typed source table, for raw rows (canaries)
    row_ids: np.ndarray | None = None  # (N,) each row's index in ``table``

    def __post_init__(self) -> None:
        n, f = self.features.shape
        if self.target.shape != (n,):
            raise ValueError(f"target must have shape ({n},) to match the features, got {self.target.shape}")
        if self.preprocessing is not None:
            if self.preprocessing.width != f or len(self.preprocessing.features) != len(self.feature_names):
                raise ValueError(
                    f"{f} feature columns but preprocessing makes {self.preprocessing.width} from "
                    f"{len(self.preprocessing.features)} features ({len(self.feature_names)} feature names)"
                )
        elif len(self.feature_names) != f or prod(self.input_shape) != f:
            raise ValueError(
                f"{f} feature columns but {len(self.feature_names)} feature names and input_shape {self.input_shape}"
            )

    def __len__(self) -> int:
        return len(self.features)

    @property
    def num_outputs(self) -> int:
        return len(self.class_labels) if self.class_labels is not None else 1

    @property
    def input_columns(self) -> list[str]:
        """The name of each column of ``features``: the feature names, or the preprocessing's input columns."""
        return input_columns(self.feature_names, self.preprocessing)

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def subset(self, indices: np.ndarray) -> Dataset:
        """Gives back the rows at ``indices``, in that order."""
        row_ids = self.row_ids[indices] if self.row_ids is not None else None
        return replace(self, features=self.features[indices], target=self.target[indices], row_ids=row_ids)

    def raw_rows(self, count: int) -> list[list[Any]]:
        """Gives back rows to verify the artifact with, as a client sends them: the first ``count``, then for
        a table one with every value missing and, with a categorical feature, one with unseen categories."""
        if self.table is None or self.row_ids is None or self.preprocessing is None:
            return self.features[:count].tolist()
        return self.table.canary_rows(self.preprocessing, self.row_ids[:count])
