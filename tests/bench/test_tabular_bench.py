"""bench/tabular.py measures what it says: a 20-column mixed CSV with missing values, loaded by the real pipeline."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from bench.tabular import mixed_csv
from training import TrainConfig
from training.data import load_table


def test_the_benchmark_file_has_20_mixed_columns_with_missing_values(tmp_path: Path) -> None:
    path = mixed_csv(tmp_path / "mixed.csv", rows=2000)
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = load_table(TrainConfig(csv=str(path), target="y"), None)
    assert dataset.preprocessing is not None and len(dataset.feature_names) == 19  # + the target: 20
    kinds = [f.kind for f in dataset.preprocessing.features]
    assert kinds.count("numeric") == 12 and kinds.count("categorical") == 6 and kinds.count("boolean") == 1
    assert all(f.missing_rate > 0 for f in dataset.preprocessing.features if f.kind != "boolean")
