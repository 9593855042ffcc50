"""Tables -> typed columns -> the preprocessing learned from the training split -> the network's input.

    table = read_table("churn.csv", target="churned", options=TableOptions(drop=("customer_id",)))
    table = read_table(frame, target="churned")          # a pandas DataFrame, the same rules
    pre = fit_preprocessing(table, train_rows, options)  # models.preprocessing.Preprocessing
    x = encode_table(table, pre)                         # (N, width) float32, via models' Encoder
    print(describe_schema(table, pre))

Column types are inferred, then overridden by ``categorical``, ``numeric`` and ``drop``:

- boolean: a boolean column, or text whose every present value is one of models.preprocessing's
  TRUE_TOKENS / FALSE_TOKENS (``yes``, ``False``, ...);
- numeric: numbers; a text column whose present values all read as numbers is numeric too;
- categorical: any other text. A text column whose present values are nearly all numbers (at least
  ``LOOKS_NUMERIC``) is refused naming its first non-number: a typo or an unlisted missing token is far
  likelier there than a category.

A missing value is null (Parquet, a DataFrame's NaN / None) or a cell equal to a missing token after
stripping surrounding spaces. Rows whose target is missing are dropped (``Table.dropped_rows``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.preprocessing import (
    ABSENT,
    DEFAULT_MISSING_TOKENS,
    FALSE_TOKENS,
    OTHER,
    TRUE_TOKENS,
    BooleanFeature,
    CategoricalFeature,
    Encoder,
    Feature,
    NumericFeature,
    Preprocessing,
)
from training.errors import DataError
from training.tablefile import ROWS_NOTE, read_file

MAX_AUTO_CLASSES = 20
LOOKS_NUMERIC = 0.9  # share of a text column's present values that are numbers, above which it is refused
Kind = Literal["numeric", "boolean", "categorical"]


@dataclass(frozen=True)
class TableOptions:
    categorical: tuple[str, ...] = ()  # columns read as categories even when they look numeric
    numeric: tuple[str, ...] = ()  # columns that must be numbers
    drop: tuple[str, ...] = ()  # columns left out: ids, leakage
    missing_tokens: tuple[str, ...] = DEFAULT_MISSING_TOKENS
    min_frequency: int = 5  # training rows a category needs for its own input column; rarer ones are pooled
    max_categories: int = 50  # the most frequent categories kept per column; the rest are pooled


@dataclass
class Column:
    name: str
    kind: Kind
    values: np.ndarray  # numeric, boolean: (N,) float64, NaN where missing; categorical: (N,) object, None


@dataclass
class Table:
    """The feature columns, typed, and the target, with the rows whose target was missing left out."""

    source: str
    columns: list[Column]
    target: np.ndarray  # (N,) int64 class index, or float32 value
    class_labels: list[str] | None
    task: Literal["classification", "regression"]
    target_name: str
    row_numbers: np.ndarray  # (N,) each row's data row number in the source, from 1
    dropped_rows: int = 0  # rows whose target was missing
    dropped_columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.target)

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def raw_rows(self, rows: np.ndarray) -> list[list[Any]]:
        """Gives back rows as a client would send them: numbers, true/false, strings, None where missing."""
        out: list[list[Any]] = [[] for _ in rows]
        for c in self.columns:
            for r, v in zip(out, c.values[rows], strict=True):
                if c.kind == "categorical":
                    r.append(v)
                elif np.isnan(v):
                    r.append(None)
                else:
                    r.append(bool(v) if c.kind == "boolean" else float(v))
        return out


# ---------------------------------------------------------------------------------------------- reading


def read_table(
    source: str | Path | pd.DataFrame,
    *,
    target: str | None,
    task: str = "auto",
    options: TableOptions | None = None,
) -> Table:
    """Gives back the typed table; raises ``DataError`` naming the column, the row and what was found."""
    options = options or TableOptions()
    if isinstance(source, pd.DataFrame):
        frame, where = source, "DataFrame"
        frame = frame.rename(columns=str)
    else:
        where = str(source)
        frame = read_file(source, missing_tokens=options.missing_tokens, text_columns=options.categorical)
    frame = frame.rename(columns=lambda n: n.strip())
    header = list(frame.columns)
    if target is None:
        raise DataError(f"{where}: give the target column to predict (--target); columns are {header}")
    if target not in header:
        raise DataError(f"{where}: target column {target!r} not found; columns are {header}")
    for flag, names in (("--categorical", options.categorical), ("--numeric", options.numeric), ("--drop", options.drop)):
        unknown = [n for n in names if n not in header]
        if unknown:
            raise DataError(f"{where}: {flag} names column {unknown[0]!r}, which is not in {header}")
        if target in names:
            raise DataError(f"{where}: {flag} names the target column {target!r}; it is predicted, not an input")
    both = sorted(set(options.categorical) & set(options.numeric))
    if both:
        raise DataError(f"{where}: column {both[0]!r} is given both --categorical and --numeric")
    missing = set(options.missing_tokens)
    target_text, target_numbers = _target_cells(frame[target], missing)
    present = ~pd.isna(target_text) if target_numbers is None else ~np.isnan(target_numbers)
    if not present.any():
        raise DataError(f"{where}: target column {target!r} is entirely missing ({len(frame)} rows, none with a value)")
    keep = np.flatnonzero(present)
    from training.data import MIN_ROWS

    if len(keep) < MIN_ROWS:
        dropped = f" ({len(frame) - len(keep)} without a target)" if len(keep) < len(frame) else ""
        raise DataError(f"{where}: need at least {MIN_ROWS} rows, got {len(keep)}{dropped}")
    row_numbers = keep + 1
    features = [n for n in header if n != target and n not in options.drop]
    if not features:
        raise DataError(f"{where}: need at least one feature column besides the target {target!r}")
    columns = [_column(frame[n].iloc[keep], n, options, where, row_numbers) for n in features]
    y, labels, resolved = _target(
        None if target_numbers is None else target_numbers[keep],
        None if target_text is None else np.asarray(target_text)[keep],
        target,
        task,
        where,
        row_numbers,
    )
    return Table(
        source=where,
        columns=columns,
        target=y,
        class_labels=labels,
        task=resolved,
        target_name=target,
        row_numbers=row_numbers,
        dropped_rows=len(frame) - len(keep),
        dropped_columns=list(options.drop),
    )


def _target_cells(s: pd.Series, missing: set[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gives back ``(text, None)`` for a text target (object array, None where missing) or ``(None, numbers)``."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return np.where(s.to_numpy(), "true", "false").astype(object), None
    if pd.api.types.is_numeric_dtype(s.dtype):
        return None, s.to_numpy(dtype=np.float64, na_value=np.nan)
    return _text(s, missing), None


def _text(s: pd.Series, missing: set[str]) -> np.ndarray:
    """Gives back the cells as an object array of stripped strings, None where missing."""
    text = s.astype("str").str.strip()  # a Python bool (pyarrow's bool with nulls) becomes "True"
    text = text.mask(s.isna() | text.isin(missing))
    return text.to_numpy(dtype=object, na_value=None)


def _column(s: pd.Series, name: str, options: TableOptions, where: str, row_numbers: np.ndarray) -> Column:
    missing = set(options.missing_tokens)
    dtype = s.dtype
    if name in options.categorical:
        if pd.api.types.is_float_dtype(dtype):  # a DataFrame's floats: 3.0 is the category "3"
            s = pd.Series([None if np.isnan(v) else _number_text(v) for v in s.to_numpy(np.float64)], dtype=object)
        values = _text(s, missing)
        kind: Kind = "categorical"
    elif pd.api.types.is_bool_dtype(dtype):
        values, kind = s.to_numpy(dtype=np.float64, na_value=np.nan), "boolean"
    elif pd.api.types.is_numeric_dtype(dtype):
        values, kind = s.to_numpy(dtype=np.float64, na_value=np.nan), "numeric"
    elif pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        raise DataError(
            f"{where}: column {name!r} holds dates ({dtype}); turn them into numbers (e.g. days since an epoch) "
            f"or text, or leave the column out with --drop {name}"
        )
    else:
        text = _text(s, missing)
        kind, values = _infer_text(text, name, options, where, row_numbers)
    present = ~pd.isna(values)
    if not present.any():
        raise DataError(
            f"{where}: column {name!r} is entirely missing ({len(values)} rows, none with a value); leave it "
            f"out with --drop {name}"
        )
    if kind != "categorical":
        _check_finite(values, s, name, where, row_numbers)
    else:
        _check_cardinality(values, name, options, where)
    return Column(name=name, kind=kind, values=values)


def _number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _infer_text(
    text: np.ndarray, name: str, options: TableOptions, where: str, row_numbers: np.ndarray
) -> tuple[Kind, np.ndarray]:
    present = ~pd.isna(text)
    numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    not_numbers = present & np.isnan(numbers) & (text != "nan") & (text != "NaN")
    if not not_numbers.any():
        return "numeric", numbers
    bad = int(np.flatnonzero(not_numbers)[0])
    if name in options.numeric:
        raise DataError(
            f"{where}: feature column {name!r} is not numeric (row {row_numbers[bad]}: {text[bad]!r}) {ROWS_NOTE}"
        )
    count = int(present.sum())
    if 1 - not_numbers.sum() / count >= LOOKS_NUMERIC:
        raise DataError(
            f"{where}: feature column {name!r} is not numeric (row {row_numbers[bad]}: {text[bad]!r}), though "
            f"{count - int(not_numbers.sum())} of its {count} values are numbers; if {text[bad]!r} means missing, "
            f"add it to --missing-tokens, if the column is categorical, say --categorical {name} {ROWS_NOTE}"
        )
    lower = pd.Series(text[present], dtype=object).str.lower()
    is_true, is_false = lower.isin(TRUE_TOKENS).to_numpy(), lower.isin(FALSE_TOKENS).to_numpy()
    if (is_true | is_false).all():
        values = np.full(len(text), np.nan)
        values[np.flatnonzero(present)] = is_true.astype(np.float64)
        return "boolean", values
    return "categorical", text


def _check_finite(values: np.ndarray, s: pd.Series, name: str, where: str, row_numbers: np.ndarray) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = values.astype(np.float32)
    bad = np.flatnonzero(np.isinf(as32))
    if len(bad):
        raw = s.iloc[bad[0]]
        raw = raw.strip() if isinstance(raw, str) else _number_text(raw) if np.isfinite(raw) else str(raw)
        raise DataError(
            f"{where}: column {name!r} row {row_numbers[bad[0]]}: {raw!r} is not a finite float32 number {ROWS_NOTE}"
        )


def _check_cardinality(values: np.ndarray, name: str, options: TableOptions, where: str) -> None:
    distinct = pd.Series(values, dtype=object).nunique(dropna=True)
    if distinct > len(values) // 2:
        raise DataError(
            f"{where}: categorical column {name!r} has {distinct} distinct values in {len(values)} rows, more than "
            f"half the rows allow: a category needs rows to learn from. If it is an id, leave it out with "
            f"--drop {name}; if it is a number, say --numeric {name}"
        )


def _target(
    numbers: np.ndarray | None, text: np.ndarray | None, name: str, task: str, where: str, row_numbers: np.ndarray
) -> tuple[np.ndarray, list[str] | None, Literal["classification", "regression"]]:
    """Gives back ``(target, class_labels, task)``: class indices and labels, or float32 values and None.

    With ``task="auto"`` the target is a classification target when any value is non-numeric, or when every
    value is an integer and there are at most ``MAX_AUTO_CLASSES`` distinct values; otherwise regression.
    Class labels are strings, sorted: numeric-looking labels by value, first, then the rest.
    """
    bad = -1
    if numbers is None:
        assert text is not None
        parsed = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        nan = np.isnan(parsed) & (text != "nan") & (text != "NaN")
        if nan.any():
            bad = int(np.flatnonzero(nan)[0])
        else:
            numbers = parsed
    if task == "auto":
        integral = numbers is not None and bool(np.all(np.isfinite(numbers) & (numbers == np.round(numbers))))
        few = numbers is not None and len(np.unique(numbers)) <= MAX_AUTO_CLASSES
        task = "classification" if numbers is None or (integral and few) else "regression"
    if task == "regression":
        if numbers is None:
            assert text is not None
            raise DataError(
                f"{where}: target column {name!r} is not numeric (row {row_numbers[bad]}: {text[bad]!r}), so it "
                f"cannot be a regression target; use task classification {ROWS_NOTE}"
            )
        with np.errstate(over="ignore"):
            y = numbers.astype(np.float32)
        inf = np.flatnonzero(~np.isfinite(y))
        if len(inf):
            shown = text[inf[0]] if text is not None else _number_text(numbers[inf[0]]) if np.isfinite(numbers[inf[0]]) else str(numbers[inf[0]])
            raise DataError(
                f"{where}: column {name!r} row {row_numbers[inf[0]]}: {shown!r} is not a finite float32 number {ROWS_NOTE}"
            )
        return y, None, "regression"
    if numbers is not None:
        # Numbers name classes by value, so "1" and "1.0" are one class labelled "1".
        uniques, index = np.unique(numbers, return_inverse=True)
        labels = [_number_text(v) for v in uniques]
    else:
        assert text is not None
        uniques, index = np.unique(text.astype(str), return_inverse=True)
        order = sorted(range(len(uniques)), key=lambda k: _label_key(str(uniques[k])))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        labels, index = [str(uniques[k]) for k in order], rank[index]
    if len(labels) < 2:
        raise DataError(f"{where}: target column {name!r} has a single class {labels[0]!r}; classification needs 2")
    return index.astype(np.int64), labels, "classification"


def _label_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


# ---------------------------------------------------------------------------------------------- preprocessing


def fit_preprocessing(table: Table, train_rows: np.ndarray, options: TableOptions) -> Preprocessing:
    """Gives back the preprocessing learned from the rows ``train_rows`` of ``table`` (the training split)."""
    return Preprocessing(
        missing_tokens=list(options.missing_tokens),
        features=[_fit_feature(c.kind, c.values[train_rows], options) for c in table.columns],
    )


def _fit_feature(kind: Kind, values: np.ndarray, options: TableOptions) -> Feature:
    n = len(values)
    if kind == "categorical":
        present = values[~pd.isna(values)]
        counts = pd.Series(present, dtype=object).value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties by name: the same every run
        kept = [(c, k) for c, k in ranked[: options.max_categories] if k >= options.min_frequency] or ranked[:1]
        return CategoricalFeature(
            categories=[str(c) for c, _ in kept],
            frequencies=[k / n for _, k in kept],
            other_rate=(len(present) - sum(k for _, k in kept)) / n,
            missing_rate=(n - len(present)) / n,
        )
    missing = np.isnan(values)
    present = values[~missing]
    fill = float(np.median(present)) if len(present) else 0.0
    rate = float(missing.mean())
    if kind == "boolean":
        return BooleanFeature(fill=fill, true_rate=float((present == 1).sum() / n), missing_rate=rate)
    return NumericFeature(fill=fill, missing_rate=rate)


def columnar(table: Table, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Gives back the table in the Encoder's columnar form ``(numbers, codes)`` for ``pre``."""
    numbers = [c.values for c in table.columns if c.kind != "categorical"]
    codes = []
    for c, f in zip(table.columns, pre.features, strict=True):
        if isinstance(f, CategoricalFeature):
            code = pd.Index(f.categories).get_indexer(c.values)  # -1 (UNSEEN) for pooled and for None
            code[pd.isna(c.values)] = ABSENT
            codes.append(code)
    n = len(table)
    return (
        np.stack(numbers, axis=1) if numbers else np.empty((n, 0)),
        np.stack(codes, axis=1).astype(np.int64) if codes else np.empty((n, 0), dtype=np.int64),
    )


def encode_table(table: Table, pre: Preprocessing) -> np.ndarray:
    """Gives back the network's input (N, width) float32, encoded by models' Encoder as serving encodes."""
    return Encoder(pre).encode(*columnar(table, pre))


def describe_schema(table: Table, pre: Preprocessing) -> str:
    """Gives back the schema as printed before training: each column's type, missing share and encoding."""
    width = max(len(n) for n in [*table.feature_names, *table.dropped_columns, "column"])
    what = f"{table.task}, {len(table.class_labels)} classes" if table.class_labels else table.task
    n = table.dropped_rows
    dropped = f"; {n} row{'s' * (n != 1)} without a target dropped" if n else ""
    lines = [
        f"{table.source}: {len(table)} rows{dropped}; target {table.target_name!r} ({what})",
        f"  {'column':<{width}}  {'type':<11}  {'missing':>7}  encoding (learned from the training split)",
    ]
    for c, f in zip(table.columns, pre.features, strict=True):
        lines.append(f"  {c.name:<{width}}  {c.kind:<11}  {f.missing_rate:>7.1%}  {_encoding(f)}")
    for name in table.dropped_columns:
        lines.append(f"  {name:<{width}}  {'dropped':<11}  {'':>7}  (--drop)")
    lines.append(f"  network input: {pre.width} columns")
    return "\n".join(lines)


def _encoding(f: Feature) -> str:
    if isinstance(f, CategoricalFeature):
        k = len(f.categories)
        parts = [f"one-hot, {k} categor{'y' if k == 1 else 'ies'}"]
        if f.other:
            parts.append(f"{OTHER} {f.other_rate:.1%} (rare, and unseen at serving)")
        if f.missing:
            parts.append("<missing>")
        return " + ".join(parts)
    base = "1 true / 0 false, " if isinstance(f, BooleanFeature) else ""
    fill = f"missing -> median {f.fill:.6g}"
    return base + fill + (" + missing indicator" if f.indicator else "")


def canary_rows(table: Table, pre: Preprocessing, rows: np.ndarray) -> list[list[Any]]:
    """Gives back raw rows to verify the artifact with: ``rows`` of the table, then one with every value
    missing and, with a categorical feature, one with categories never seen in training."""
    out = table.raw_rows(rows)
    out.append([None] * len(table.columns))
    if any(isinstance(f, CategoricalFeature) for f in pre.features) and out:
        unseen = list(out[0])
        for j, f in enumerate(pre.features):
            if isinstance(f, CategoricalFeature):
                unseen[j] = _unseen(f.categories, pre.missing_tokens)
        out.append(unseen)
    return out


def _unseen(categories: Sequence[str], tokens: Sequence[str]) -> str:
    taken = set(categories) | {t.strip() for t in tokens}
    name = "never seen in training"
    while name in taken:
        name += "!"
    return name
