"""The user's own CSV: good files train and export, bad ones fail before training naming column and row.

(Categories, missing values and Parquet: test_tabular_data.py.)"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models import load_artifact
from training import DataError, TrainConfig, load_data, train
from training.tabular import read_table as read_csv


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def fruit_rows(n: int = 40) -> list[list[object]]:
    """Two well-separated numeric features and a string label."""
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    for i in range(n):
        label = ("pear", "apple", "fig")[i % 3]
        centre = {"pear": 0.0, "apple": 5.0, "fig": 10.0}[label]
        rows.append([round(centre + rng.normal(), 3), round(-centre + rng.normal(), 3), label])
    return rows


def quick(csv_path: Path, target: str, out_dir: Path, **options: Any) -> TrainConfig:
    settings = {
        "epochs": 20,
        "batch_size": 8,
        "lr": 1e-2,
        "hidden": (16,),
        "device": "cpu",
        "progress": False,
    }
    settings |= options
    return TrainConfig(csv=str(csv_path), target=target, out_dir=str(out_dir), **settings)


def test_csv_with_string_labels_trains_a_classifier_with_sorted_string_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "fruit.csv", ["width", "height", "kind"], fruit_rows())

    artifact = load_artifact(train(quick(path, "kind", tmp_path / "out")))

    m = artifact.manifest
    assert m.task == "classification"
    assert m.class_labels == ["apple", "fig", "pear"]
    assert (m.feature_names, m.target_name, m.name) == (["width", "height"], "kind", "fruit")
    assert m.metrics["val_accuracy"] >= 0.9
    table = read_csv(path, target="kind")
    file_rows = np.stack([c.values for c in table.columns], axis=1)
    # Canaries are raw rows from the file, not standardized ones (then one with every value missing).
    canary = torch.tensor(m.canary.inputs[:-1])
    assert all(any(np.allclose(row, r, atol=1e-6) for r in file_rows) for row in canary.numpy())
    assert m.canary.inputs[-1] == [None, None]


def test_csv_regression_learns_the_target_in_real_units(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    y = 1000 + 300 * x[:, 0] - 200 * x[:, 1]  # far from zero mean, unit variance: needs the rescale layer
    path = write_csv(tmp_path / "price.csv", ["a", "b", "price"], np.column_stack([x, y]).round(4).tolist())

    artifact = load_artifact(
        train(quick(path, "price", tmp_path / "out", epochs=30, batch_size=16, dropout=0.0))
    )

    m = artifact.manifest
    assert m.task == "regression" and m.class_labels is None
    assert m.metrics["val_r2"] > 0.9
    scale = artifact.model.get_submodule("output_scale")
    assert scale.shift.item() == pytest.approx(1000, abs=60)
    assert scale.scale.item() == pytest.approx(360, rel=0.15)
    with torch.inference_mode():
        pred = artifact.model(torch.tensor(x[:50], dtype=torch.float32))[:, 0].numpy()
    assert np.sqrt(np.mean((pred - y[:50]) ** 2)) < 0.2 * y.std()


def test_integer_target_with_few_values_is_classification_with_numerically_sorted_labels(
    tmp_path: Path,
) -> None:
    rows = [[i, float(i % 3), (2, 10, 1)[i % 3]] for i in range(30)]
    path = write_csv(tmp_path / "codes.csv", ["a", "b", "code"], rows)

    dataset = read_csv(path, target="code")

    assert dataset.task == "classification"
    assert dataset.class_labels == ["1", "2", "10"]
    assert dataset.target[:3].tolist() == [1, 2, 0]  # rows labelled 2, 10, 1


def test_integer_target_with_many_values_is_regression_unless_told_otherwise(tmp_path: Path) -> None:
    rows = [[i, i * 2, i] for i in range(30)]  # 30 distinct integers: more than 20
    path = write_csv(tmp_path / "counts.csv", ["a", "b", "n"], rows)

    assert read_csv(path, target="n").task == "regression"
    forced = read_csv(path, target="n", task="classification")
    assert forced.task == "classification" and len(forced.class_labels or []) == 30


def test_a_missing_target_column_is_named_with_the_columns_there_are(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", ["a", "b", "c"], [[1, 2, 3]] * 12)

    with pytest.raises(DataError, match=r"target column 'y' not found; columns are \['a', 'b', 'c'\]"):
        load_data(TrainConfig(csv=str(path), target="y"))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("inf", r"column 'age' row 7: 'inf' is not a finite float32 number"),
        ("-1e39", r"column 'age' row 7: '-1e\+39' is not a finite float32 number"),
        ("Paris", r"feature column 'age' is not numeric \(row 7: 'Paris'\), though 11 of its 12 values"),
    ],
)
def test_a_bad_feature_cell_is_reported_with_its_column_and_data_row(
    tmp_path: Path, cell: str, expected: str
) -> None:
    rows: list[list[object]] = [[30 + i, i % 2] for i in range(12)]
    rows[6][0] = cell  # data row 7, counting from 1 after the header
    path = write_csv(tmp_path / "people.csv", ["age", "sick"], rows)

    with pytest.raises(DataError, match=expected) as e:
        read_csv(path, target="sick")
    assert "header not counted" in str(e.value)


def test_too_few_rows_says_how_many_are_needed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tiny.csv", ["a", "y"], [[i, i % 2] for i in range(5)])

    with pytest.raises(DataError, match="need at least 10 rows, got 5"):
        read_csv(path, target="y")


def test_a_class_with_a_single_member_cannot_be_stratified(tmp_path: Path) -> None:
    rows = [[i, "a" if i < 11 else "b"] for i in range(12)]
    path = write_csv(tmp_path / "lonely.csv", ["x", "y"], rows)

    with pytest.raises(
        DataError, match="class 'b' has a single member; stratified split needs at least 2 per class"
    ):
        train(TrainConfig(csv=str(path), target="y", out_dir=str(tmp_path / "out"), progress=False))
    assert not (tmp_path / "out").exists()


def test_a_row_with_the_wrong_number_of_fields_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,y\n" + "1,2,0\n" * 4 + "1,2\n" + "1,2,1\n" * 8)

    with pytest.raises(DataError, match="row 5 has 2 fields but the header has 3"):
        read_csv(path, target="y")


def test_a_non_numeric_regression_target_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["a", "y"], [[i, "x" if i == 3 else i * 0.5] for i in range(12)])

    with pytest.raises(DataError, match=r"target column 'y' is not numeric \(row 4: 'x'\)"):
        read_csv(path, target="y", task="regression")
