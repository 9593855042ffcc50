"""Real tables: text categories, booleans and missing values are learned from the training split, stored in the
artifact, and reproduced from it; bad tables are refused before training, writing nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from models import load_artifact
from models.preprocessing import CategoricalFeature, NumericFeature
from tests.mixed_table import TARGET, mixed_frame, write_mixed_csv
from training import DataError, TrainConfig, load_data, train
from training.cli import main
from training.tabular import TableOptions, read_table

QUICK: dict[str, Any] = {"epochs": 15, "hidden": (32,), "device": "cpu", "progress": False}
ACCURACY_BAR = 0.75  # with plan and region ~0.80 on this table; without them ~0.65 (a boolean and numbers)


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixed_csv(tmp_path_factory.mktemp("tables") / "customers.csv")


@pytest.fixture(scope="module")
def mixed_artifact(mixed_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "customers"
    return train(
        TrainConfig(csv=str(mixed_csv), target=TARGET, drop=("customer_id",), out_dir=str(out), **QUICK)
    )


def test_a_mixed_csv_meets_an_accuracy_bar_that_the_numbers_alone_cannot(
    mixed_csv: Path, mixed_artifact: Path, tmp_path: Path
) -> None:
    with_categories = load_artifact(mixed_artifact).manifest.metrics["val_accuracy"]
    numbers_only = TrainConfig(
        csv=str(mixed_csv),
        target=TARGET,
        drop=("customer_id", "plan", "region"),
        out_dir=str(tmp_path / "n"),
        **QUICK,
    )
    without = load_artifact(train(numbers_only)).manifest.metrics["val_accuracy"]
    assert with_categories >= ACCURACY_BAR > without


def test_column_types_are_inferred_and_the_artifact_holds_the_preprocessing(mixed_artifact: Path) -> None:
    m = load_artifact(mixed_artifact).manifest
    assert m.feature_names == ["age", "plan", "region", "member", "income", "country"]
    assert m.preprocessing is not None
    kinds = [f.kind for f in m.preprocessing.features]
    assert kinds == ["numeric", "categorical", "categorical", "boolean", "numeric", "categorical"]
    age, plan = m.preprocessing.features[0], m.preprocessing.features[1]
    assert isinstance(age, NumericFeature) and age.indicator and 35 < age.fill < 55
    assert isinstance(plan, CategoricalFeature)
    assert sorted(plan.categories) == ["basic", "plus", "pro", "team"]  # the rare plans are pooled
    assert plan.other and plan.missing
    assert sum(plan.frequencies) + plan.other_rate + plan.missing_rate == pytest.approx(1.0)
    assert m.layers[0].num_features == m.preprocessing.width == 17


def test_the_preprocessing_is_learned_from_the_training_split_only(mixed_csv: Path) -> None:
    cfg = TrainConfig(csv=str(mixed_csv), target=TARGET, drop=("customer_id",))
    dataset = load_data(cfg)
    table = read_table(mixed_csv, target=TARGET, options=TableOptions(drop=("customer_id",)))
    from training.data import split_dataset

    train_ds, _ = split_dataset(dataset, val_fraction=cfg.val_fraction, seed=cfg.seed)
    assert train_ds.row_ids is not None
    ages = table.columns[0].values[train_ds.row_ids]
    assert dataset.preprocessing is not None
    assert dataset.preprocessing.features[0].fill == float(np.nanmedian(ages))
    assert np.nanmedian(ages) != np.nanmedian(table.columns[0].values)  # the whole file's median differs


def test_the_schema_is_printed_before_training_with_the_dropped_rows(
    mixed_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_data(TrainConfig(csv=str(mixed_csv), target=TARGET, drop=("customer_id",)))
    out = capsys.readouterr().out
    assert "3 rows without a target dropped" in out
    assert re.search(r"plan\s+categorical\s+\S+%\s+one-hot, 4 categories \+ <other>", out)
    assert re.search(r"member\s+boolean", out) and re.search(r"age\s+numeric.*missing indicator", out)
    assert re.search(r"customer_id\s+dropped", out)
    assert "network input: 17 columns" in out


def test_the_canary_rows_cover_missing_values_and_unseen_categories(mixed_artifact: Path) -> None:
    m = load_artifact(mixed_artifact).manifest
    assert [None] * 6 in m.canary.inputs
    assert any(
        isinstance(v, str) and v not in ("DE",) and "never seen" in v for row in m.canary.inputs for v in row
    )


def test_every_default_missing_token_is_missing_and_spaces_around_cells_are_stripped(tmp_path: Path) -> None:
    frame = mixed_frame(200)
    frame.loc[5, "region"] = "  south "
    table = read_table(frame, target=TARGET, options=TableOptions(drop=("customer_id",)))
    age, plan, region = table.columns[0].values, table.columns[1].values, table.columns[2].values
    assert int(np.isnan(age).sum()) == 9 and sum(v is None for v in plan) == 9
    assert region[5 - (5 > 3)] == "south"  # row 3 (no target) was dropped before it


def test_missing_tokens_are_configurable(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": ["-" if i == 1 else str(i) for i in range(15)], "y": ["a", "b", "a"] * 5})
    with pytest.raises(DataError, match=r"feature column 'x' is not numeric \(row 2: '-'\)"):
        read_table(frame, target="y")
    table = read_table(frame, target="y", options=TableOptions(missing_tokens=("-",)))
    assert table.columns[0].kind == "numeric" and int(np.isnan(table.columns[0].values).sum()) == 1


def test_overrides_read_a_numeric_column_as_categories_and_refuse_text_in_a_numeric_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rooms.csv"
    path.write_text("rooms,kind,y\n" + "".join(f"{i % 3 + 1},{'ab'[i % 2]},{i % 2}\n" for i in range(20)))
    table = read_table(path, target="y", options=TableOptions(categorical=("rooms",)))
    assert table.columns[0].kind == "categorical" and set(table.columns[0].values) == {"1", "2", "3"}
    with pytest.raises(DataError, match=r"feature column 'kind' is not numeric \(row 1: 'a'\)"):
        read_table(path, target="y", options=TableOptions(numeric=("kind",)))


def test_a_parquet_file_and_a_dataframe_give_the_same_table_as_the_csv(
    mixed_csv: Path, tmp_path: Path
) -> None:
    options = TableOptions(drop=("customer_id",))
    from_csv = read_table(mixed_csv, target=TARGET, options=options)
    frame = pd.read_csv(mixed_csv, dtype=str, keep_default_na=False)
    frame.to_parquet(tmp_path / "customers.parquet")
    for other in (read_table(tmp_path / "customers.parquet", target=TARGET, options=options),
                  read_table(frame, target=TARGET, options=options)):  # fmt: skip
        assert [c.kind for c in other.columns] == [c.kind for c in from_csv.columns]
        for a, b in zip(other.columns, from_csv.columns, strict=True):
            assert pd.Series(a.values).equals(pd.Series(b.values))
        assert np.array_equal(other.target, from_csv.target)


def test_train_takes_a_pandas_dataframe(tmp_path: Path) -> None:
    frame = mixed_frame(300)
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")  # a typed column, NaN where missing
    out = train(
        TrainConfig(target=TARGET, drop=("customer_id",), out_dir=str(tmp_path / "df"), **QUICK), data=frame
    )
    m = load_artifact(out).manifest
    assert m.name == "dataframe" and m.feature_names[0] == "age" and m.training["dataset"] is None


def test_a_regression_drops_rows_without_a_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = [f"{v * 3 + 10:.3f}" for v in x]
    y[4] = y[9] = ""
    pd.DataFrame({"x": x, "kind": ["a", "b"] * 30, "y": y}).to_csv(tmp_path / "r.csv", index=False)
    dataset = load_data(TrainConfig(csv=str(tmp_path / "r.csv"), target="y"))
    assert dataset.task == "regression" and len(dataset) == 58
    assert "2 rows without a target dropped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("a,b\n" + "1,2\n" * 12, "d.csv", r"target column 'y' not found; columns are \['a', 'b'\]"),
        ("a,y\n" + "1,\n2,NA\n" * 6, "d.csv", r"target column 'y' is entirely missing \(12 rows, none with a value\)"),
        ("a,b,y\n" + "1,NA,0\n2,,1\n" * 6, "d.csv", r"column 'b' is entirely missing .*--drop b"),
        ("a,name,y\n" + "".join(f"{i},n{i},{i % 2}\n" for i in range(20)), "d.csv",
         r"categorical column 'name' has 20 distinct values in 20 rows, more than half the rows allow.*--drop name"),
        ("a,y\n1,2\n", "d.xlsx", r"expected a CSV \(\.csv\) or Parquet \(\.parquet\) file, got \.xlsx"),
        ("PK\x03\x04\x00\x00binary", "d.csv", r"not a CSV file: it holds binary data"),
        ("not parquet at all", "d.parquet", r"not a readable Parquet file"),
    ],
)  # fmt: skip
def test_bad_tables_exit_2_before_training_and_write_nothing(
    tmp_path: Path, content: str, name: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--csv", str(path), "--target", "y", "--out", str(out), "--no-progress"])
    assert e.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_cli_flags_name_columns_to_drop_and_read_as_categories(mixed_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    main(["--csv", str(mixed_csv), "--target", TARGET, "--drop", "customer_id,income", "--categorical", "age",
          "--min-frequency", "1", "--out", str(out), "--epochs", "1", "--hidden", "8", "--no-progress"])  # fmt: skip
    m = load_artifact(out).manifest
    assert "income" not in m.feature_names and m.preprocessing is not None
    assert m.preprocessing.features[m.feature_names.index("age")].kind == "categorical"
    assert m.training["drop"] == ["customer_id", "income"]


def test_the_artifact_reproduces_training_features_from_raw_rows(
    mixed_csv: Path, mixed_artifact: Path
) -> None:
    artifact = load_artifact(mixed_artifact)
    dataset = load_data(TrainConfig(csv=str(mixed_csv), target=TARGET, drop=("customer_id",)))
    assert dataset.table is not None and artifact.encoder is not None
    rows = dataset.table.raw_rows(np.arange(len(dataset)))
    encoded = artifact.encoder.encode_rows(rows, artifact.manifest.feature_names)
    np.testing.assert_array_equal(encoded, dataset.features)
    with torch.inference_mode():
        assert artifact.model(torch.from_numpy(encoded)).shape == (len(dataset), 2)


def test_a_table_trains_with_a_report_naming_the_input_columns(tmp_path: Path) -> None:
    cfg = TrainConfig(target=TARGET, drop=("customer_id",), out_dir=str(tmp_path / "r"), report=True, **QUICK)
    artifact = load_artifact(train(cfg, data=mixed_frame(300)))
    report = artifact.files["report.html"].decode()
    assert "plan=&lt;other&gt;" in report or "plan=<other>" in report
