"""The user's own data: a CSV file with a header row, numeric feature columns and one target column.

    dataset = read_csv("houses.csv", target="price", task="auto")

Rows in messages are data rows counted from 1, the header not counted (file line = row + 1 when no cell
spans lines). With ``task="auto"`` the target is a classification target when any value is non-numeric, or
when every value is an integer and there are at most ``MAX_AUTO_CLASSES`` distinct values; otherwise it is
regression. Class labels are strings, sorted: numeric-looking labels by value, first, then the rest.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from training.dataset import MIN_ROWS, Dataset
from training.errors import DataError

MAX_AUTO_CLASSES = 20
MISSING = ("", "na", "n/a", "nan", "null", "none", "?")  # compared lowercased, after stripping spaces
ROWS_NOTE = "(data rows count from 1, header not counted)"


def read_csv(path: str | Path, *, target: str | None, task: str = "auto") -> Dataset:
    """Gives back the dataset in the CSV file at ``path``; raises ``DataError`` naming the first problem."""
    path = Path(path)
    header, rows = _read_rows(path)
    if target is None:
        raise DataError(f"{path}: give the target column to predict (--target); columns are {header}")
    if target not in header:
        raise DataError(f"{path}: target column {target!r} not found; columns are {header}")
    if len(header) < 2:
        raise DataError(f"{path}: need at least one feature column besides the target {target!r}")
    if len(rows) < MIN_ROWS:
        raise DataError(f"{path}: need at least {MIN_ROWS} rows, got {len(rows)}")
    cells = np.char.strip(np.array(rows, dtype=str).reshape(len(rows), len(header)))  # (N, C)
    _check_missing(cells, header, path)
    t = header.index(target)
    feature_names = [name for j, name in enumerate(header) if j != t]
    features = np.stack(
        [_numeric_column(cells[:, j], name, path) for j, name in enumerate(header) if j != t], axis=1
    ).reshape(len(rows), len(feature_names))
    target_values, class_labels = _target(cells[:, t], target, task, path)
    return Dataset(
        features=features,
        target=target_values,
        feature_names=feature_names,
        class_labels=class_labels,
        task="regression" if class_labels is None else "classification",
        target_name=target,
        input_shape=(len(feature_names),),
        name=path.stem,
    )


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = [row for row in csv.reader(f) if row]  # a blank line (often the last one) is no row
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not lines:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows")
    header = [name.strip() for name in lines[0]]
    for j, name in enumerate(header, start=1):
        if not name:
            raise DataError(f"{path}: column {j} has no name in the header row")
    repeated = sorted({n for n in header if header.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column names must be unique, repeated: {repeated}")
    for i, row in enumerate(lines[1:], start=1):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {i} has {len(row)} fields but the header has {len(header)} {ROWS_NOTE}"
            )
    return header, lines[1:]


def _check_missing(cells: np.ndarray, header: list[str], path: Path) -> None:
    missing = np.isin(np.char.lower(cells), MISSING)
    if missing.any():
        i, j = np.argwhere(missing)[0]  # the first one in file order
        raw = str(cells[i, j])
        what = "empty cell" if raw == "" else f"missing value {raw!r}"
        raise DataError(f"{path}: column {header[j]!r} row {i + 1}: {what} {ROWS_NOTE}")


def _parse_floats(column: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Gives back ``(values, -1)``, or ``(None, i)`` where row index ``i`` is the first that is no number."""
    try:
        return column.astype(np.float64), -1
    except ValueError:
        pass
    for i, raw in enumerate(column):  # only on failure: find where, for the message
        try:
            float(raw)
        except ValueError:
            return None, i
    return np.array([float(raw) for raw in column]), -1  # numpy refused a spelling Python accepts


def _numeric_column(column: np.ndarray, name: str, path: Path) -> np.ndarray:
    values, bad = _parse_floats(column)
    if values is None:
        raise DataError(
            f"{path}: feature column {name!r} is not numeric (row {bad + 1}: {str(column[bad])!r}) {ROWS_NOTE}"
        )
    return _finite_float32(values, column, name, path)


def _finite_float32(values: np.ndarray, column: np.ndarray, name: str, path: Path) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        raise DataError(
            f"{path}: column {name!r} row {bad[0] + 1}: {str(column[bad[0]])!r} is not a finite float32 number {ROWS_NOTE}"
        )
    return out


def _target(column: np.ndarray, name: str, task: str, path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Gives back ``(target, class_labels)``: class indices and labels, or float32 values and None."""
    values, bad = _parse_floats(column)
    if task == "auto":
        integral = values is not None and bool(np.all(np.isfinite(values) & (values == np.round(values))))
        few = values is not None and len(np.unique(values)) <= MAX_AUTO_CLASSES
        task = "classification" if values is None or (integral and few) else "regression"
    if task == "regression":
        if values is None:
            raise DataError(
                f"{path}: target column {name!r} is not numeric (row {bad + 1}: {str(column[bad])!r}), so it cannot be "
                f"a regression target; use task classification {ROWS_NOTE}"
            )
        return _finite_float32(values, column, name, path), None
    if values is not None:
        # Numbers name classes by value, so "1" and "1.0" are one class labelled "1".
        uniques, index = np.unique(values, return_inverse=True)
        labels = [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in uniques]
    else:
        uniques, index = np.unique(column, return_inverse=True)
        order = sorted(range(len(uniques)), key=lambda k: _label_key(str(uniques[k])))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        labels, index = [str(uniques[k]) for k in order], rank[index]
    if len(labels) < 2:
        raise DataError(
            f"{path}: target column {name!r} has a single class {labels[0]!r}; classification needs 2"
        )
    return index.astype(np.int64), labels


def _label_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
