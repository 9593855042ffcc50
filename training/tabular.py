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
from training.dataset import MIN_ROWS
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
    """One typed feature column. Text is kept factorized: each distinct value once, rows as codes."""

    name: str
    kind: Kind
    numbers: np.ndarray | None = None  # numeric, boolean: (N,) float64, NaN where missing
    codes: np.ndarray | None = None  # categorical: (N,) int64 index into ``levels``, -1 where missing
    levels: np.ndarray | None = None  # categorical: (L,) object, the distinct values (stripped strings)

    @property
    def values(self) -> np.ndarray:
        """(N,) float64 with NaN, or for a categorical column object strings with None, where missing."""
        if self.numbers is not None:
            return self.numbers
        assert self.codes is not None and self.levels is not None
        return _with_none(self.levels)[self.codes]  # code -1: the appended None

    def take(self, rows: np.ndarray) -> Column:
        if self.numbers is not None:
            return Column(self.name, self.kind, numbers=self.numbers[rows])
        assert self.codes is not None
        return Column(self.name, self.kind, codes=self.codes[rows], levels=self.levels)


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

    def canary_rows(self, pre: Preprocessing, rows: np.ndarray) -> list[list[Any]]:
        return canary_rows(self, pre, rows)

    def raw_rows(self, rows: np.ndarray) -> list[list[Any]]:
        """Gives back rows as a client would send them: numbers, true/false, strings, None where missing."""
        out: list[list[Any]] = [[] for _ in rows]
        for c in self.columns:
            for r, v in zip(out, c.take(rows).values, strict=True):
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
        frame, where = source.rename(columns=str), "DataFrame"
    else:
        where = str(source)
        frame = read_file(source, missing_tokens=options.missing_tokens, text_columns=options.categorical)
    frame = frame.rename(columns=lambda n: n.strip())
    header = list(frame.columns)
    if target is None:
        raise DataError(f"{where}: give the target column to predict (--target); columns are {header}")
    if target not in header:
        raise DataError(f"{where}: target column {target!r} not found; columns are {header}")
    for flag, names in (
        ("--categorical", options.categorical),
        ("--numeric", options.numeric),
        ("--drop", options.drop),
    ):
        unknown = [n for n in names if n not in header]
        if unknown:
            raise DataError(f"{where}: {flag} names column {unknown[0]!r}, which is not in {header}")
        if target in names:
            raise DataError(
                f"{where}: {flag} names the target column {target!r}; it is predicted, not an input"
            )
    both = sorted(set(options.categorical) & set(options.numeric))
    if both:
        raise DataError(f"{where}: column {both[0]!r} is given both --categorical and --numeric")
    missing = set(options.missing_tokens)
    y_codes, y_levels, y_numbers = _target_cells(frame[target], missing)
    present = y_codes >= 0 if y_codes is not None else ~np.isnan(y_numbers)  # type: ignore[arg-type]
    if not present.any():
        raise DataError(
            f"{where}: target column {target!r} is entirely missing ({len(frame)} rows, none with a value)"
        )
    keep = np.flatnonzero(present)
    if len(keep) < MIN_ROWS:
        dropped = f" ({len(frame) - len(keep)} without a target)" if len(keep) < len(frame) else ""
        raise DataError(f"{where}: need at least {MIN_ROWS} rows, got {len(keep)}{dropped}")
    row_numbers = keep + 1
    features = [n for n in header if n != target and n not in options.drop]
    if not features:
        raise DataError(f"{where}: need at least one feature column besides the target {target!r}")
    everything = len(keep) == len(frame)
    columns = []
    for name in features:
        column = _column(frame[name], name, options, where)
        column = column if everything else column.take(keep)
        _check_column(column, frame[name], where, row_numbers, keep, options)
        columns.append(column)
    if y_codes is not None:
        assert y_levels is not None
        y, labels, resolved = _text_target(y_codes[keep], y_levels, target, task, where, row_numbers)
    else:
        assert y_numbers is not None
        y, labels, resolved = _target(y_numbers[keep], None, target, task, where, row_numbers)
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


def factorize_text(s: pd.Series, missing: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Gives back ``(codes, levels)``: each row's index into the distinct stripped strings, -1 where missing
    (null, or a missing token once stripped). Work on the distinct values, not the rows, keeps a 100,000-row
    column to one hashing pass."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    stripped = np.array([_cell_text(u).strip() for u in uniques], dtype=object)
    stripped[np.isin(stripped, list(missing))] = None
    merged, levels = pd.factorize(pd.Series(stripped, dtype=object), use_na_sentinel=True)
    lookup = np.append(merged, -1)  # code -1 (null) stays -1
    return lookup[codes].astype(np.int64), np.asarray(levels, dtype=object)


def _cell_text(v: Any) -> str:
    if isinstance(v, float | np.floating):  # a DataFrame's floats read as categories: 3.0 is "3"
        return _number_text(float(v))
    return str(v)  # a Python bool (pyarrow's bool column with nulls) becomes "True"


def _target_cells(
    s: pd.Series, missing: set[str]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gives back ``(codes, levels, None)`` for a text target or ``(None, None, numbers)``."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return None, None, s.to_numpy(dtype=np.float64, na_value=np.nan)
    codes, levels = factorize_text(s, missing)
    return codes, levels, None


def _column(s: pd.Series, name: str, options: TableOptions, where: str) -> Column:
    missing = set(options.missing_tokens)
    dtype = s.dtype
    if name in options.categorical:
        codes, levels = factorize_text(s, missing)
        return Column(name, "categorical", codes=codes, levels=levels)
    if pd.api.types.is_bool_dtype(dtype):
        return Column(name, "boolean", numbers=s.to_numpy(dtype=np.float64, na_value=np.nan))
    if pd.api.types.is_numeric_dtype(dtype):
        return Column(name, "numeric", numbers=s.to_numpy(dtype=np.float64, na_value=np.nan))
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        raise DataError(
            f"{where}: column {name!r} holds dates ({dtype}); turn them into numbers (e.g. days since an epoch) "
            f"or text, or leave the column out with --drop {name}"
        )
    codes, levels = factorize_text(s, missing)
    return _infer_text(codes, levels, name, options)


def _with_none(levels: np.ndarray) -> np.ndarray:
    """Gives back ``levels`` and None after them, so that code -1 (missing) indexes None."""
    return np.array([*levels, None], dtype=object)


def _number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _level_numbers(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gives back each level as a number (NaN where it is none) and whether it is no number."""
    numbers = pd.to_numeric(pd.Series(levels, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    return numbers, np.isnan(numbers) & ~np.isin(levels, ["nan", "NaN"])


def _infer_text(codes: np.ndarray, levels: np.ndarray, name: str, options: TableOptions) -> Column:
    """Gives back a text column typed: numeric when every value reads as a number, boolean when every
    value is a true/false token, categorical otherwise (``_check_column`` refuses what looks numeric)."""
    numbers, not_numbers = _level_numbers(levels)
    if not not_numbers.any() or name in options.numeric:
        return Column(name, "numeric", numbers=np.append(numbers, np.nan)[codes], levels=levels, codes=codes)
    lower = np.array([v.lower() for v in levels], dtype=object)
    is_true, is_false = np.isin(lower, TRUE_TOKENS), np.isin(lower, FALSE_TOKENS)
    if (is_true | is_false).all():
        flag = np.append(np.where(is_true, 1.0, 0.0), np.nan)[codes]
        return Column(name, "boolean", numbers=flag)
    return Column(name, "categorical", codes=codes, levels=levels)


def _check_column(
    c: Column, s: pd.Series, where: str, row_numbers: np.ndarray, keep: np.ndarray, options: TableOptions
) -> None:
    """Raises ``DataError`` for a column that cannot be learned from: entirely missing, not the numbers it
    should be, a number beyond float32, more categories than the rows allow."""
    name = c.name
    present = c.codes >= 0 if c.codes is not None else ~np.isnan(c.values)
    if not present.any():
        raise DataError(
            f"{where}: column {name!r} is entirely missing ({len(present)} rows, none with a value); leave it "
            f"out with --drop {name}"
        )
    if c.kind == "numeric" and c.levels is not None:  # from text: say which cell is no number
        assert c.codes is not None
        _, not_numbers = _level_numbers(c.levels)
        bad_rows = np.flatnonzero((c.codes >= 0) & np.append(not_numbers, False)[c.codes])
        if len(bad_rows):
            bad = int(bad_rows[0])
            raise DataError(
                f"{where}: feature column {name!r} is not numeric (row {row_numbers[bad]}: "
                f"{c.levels[c.codes[bad]]!r}) {ROWS_NOTE}"
            )
    if c.kind == "categorical":
        assert c.codes is not None and c.levels is not None
        _, not_numbers = _level_numbers(c.levels)
        counts = np.bincount(c.codes[c.codes >= 0], minlength=len(c.levels))
        text_rows = int(counts[not_numbers].sum())
        count = int(counts.sum())
        if name not in options.categorical and 1 - text_rows / count >= LOOKS_NUMERIC:
            bad = int(np.flatnonzero((c.codes >= 0) & np.append(not_numbers, False)[c.codes])[0])
            raise DataError(
                f"{where}: feature column {name!r} is not numeric (row {row_numbers[bad]}: "
                f"{c.levels[c.codes[bad]]!r}), though {count - text_rows} of its {count} values are numbers; if "
                f"{c.levels[c.codes[bad]]!r} means missing, add it to --missing-tokens, if the column is "
                f"categorical, say --categorical {name} {ROWS_NOTE}"
            )
        distinct = int((counts > 0).sum())
        if distinct > len(c.codes) // 2:
            raise DataError(
                f"{where}: categorical column {name!r} has {distinct} distinct values in {len(c.codes)} rows, more "
                f"than half the rows allow: a category needs rows to learn from. If it is an id, leave it out "
                f"with --drop {name}; if it is a number, say --numeric {name}"
            )
        return
    assert c.numbers is not None
    with np.errstate(over="ignore", invalid="ignore"):
        inf = np.flatnonzero(np.isinf(c.numbers.astype(np.float32)))
    if len(inf):
        i = int(inf[0])
        if c.levels is not None and c.codes is not None:
            raw = str(c.levels[c.codes[i]])
        else:
            v = float(c.numbers[i])
            raw = _number_text(v) if np.isfinite(v) else str(v)
        raise DataError(
            f"{where}: column {name!r} row {row_numbers[i]}: {raw!r} is not a finite float32 number {ROWS_NOTE}"
        )


def _text_target(
    codes: np.ndarray, levels: np.ndarray, name: str, task: str, where: str, row_numbers: np.ndarray
) -> tuple[np.ndarray, list[str] | None, Literal["classification", "regression"]]:
    numbers, not_numbers = _level_numbers(levels)
    if not not_numbers.any():
        return _target(
            np.append(numbers, np.nan)[codes], _with_none(levels)[codes], name, task, where, row_numbers
        )
    if task == "regression":
        bad = int(np.flatnonzero(np.append(not_numbers, False)[codes])[0])
        raise DataError(
            f"{where}: target column {name!r} is not numeric (row {row_numbers[bad]}: {levels[codes[bad]]!r}), so "
            f"it cannot be a regression target; use task classification {ROWS_NOTE}"
        )
    used = np.flatnonzero(np.bincount(codes, minlength=len(levels)))
    order = sorted(used, key=lambda k: _label_key(str(levels[k])))
    rank = np.full(len(levels), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    labels = [str(levels[k]) for k in order]
    if len(labels) < 2:
        raise DataError(
            f"{where}: target column {name!r} has a single class {labels[0]!r}; classification needs 2"
        )
    return rank[codes], labels, "classification"


def _target(
    numbers: np.ndarray, text: np.ndarray | None, name: str, task: str, where: str, row_numbers: np.ndarray
) -> tuple[np.ndarray, list[str] | None, Literal["classification", "regression"]]:
    """Gives back ``(target, class_labels, task)`` of a numeric target: class indices and labels, or float32
    values and None.

    With ``task="auto"`` the target is a classification target when any value is non-numeric, or when every
    value is an integer and there are at most ``MAX_AUTO_CLASSES`` distinct values; otherwise regression.
    Class labels are strings, sorted: numeric-looking labels by value, first, then the rest.
    """
    if task == "auto":
        integral = bool(np.all(np.isfinite(numbers) & (numbers == np.round(numbers))))
        task = "classification" if integral and len(np.unique(numbers)) <= MAX_AUTO_CLASSES else "regression"
    if task == "regression":
        with np.errstate(over="ignore"):
            y = numbers.astype(np.float32)
        inf = np.flatnonzero(~np.isfinite(y))
        if len(inf):
            v = float(numbers[inf[0]])
            shown = text[inf[0]] if text is not None else _number_text(v) if np.isfinite(v) else str(v)
            raise DataError(
                f"{where}: column {name!r} row {row_numbers[inf[0]]}: {shown!r} is not a finite float32 number {ROWS_NOTE}"
            )
        return y, None, "regression"
    # Numbers name classes by value, so "1" and "1.0" are one class labelled "1".
    uniques, index = np.unique(numbers, return_inverse=True)
    labels = [_number_text(v) for v in uniques]
    if len(labels) < 2:
        raise DataError(
            f"{where}: target column {name!r} has a single class {labels[0]!r}; classification needs 2"
        )
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
        features=[_fit_feature(c, train_rows, options) for c in table.columns],
    )


def _fit_feature(c: Column, rows: np.ndarray, options: TableOptions) -> Feature:
    n = len(rows)
    if c.kind == "categorical":
        assert c.codes is not None and c.levels is not None
        codes = c.codes[rows]
        counts = np.bincount(codes[codes >= 0], minlength=len(c.levels))
        ranked = sorted(
            ((str(c.levels[k]), int(counts[k])) for k in np.flatnonzero(counts)),
            key=lambda kv: (-kv[1], kv[0]),
        )  # ties by name: the same every run
        kept = [(v, k) for v, k in ranked[: options.max_categories] if k >= options.min_frequency] or ranked[
            :1
        ]
        present = int(counts.sum())
        return CategoricalFeature(
            categories=[v for v, _ in kept],
            frequencies=[k / n for _, k in kept],
            other_rate=(present - sum(k for _, k in kept)) / n,
            missing_rate=(n - present) / n,
        )
    assert c.numbers is not None
    values = c.numbers[rows]
    missing = np.isnan(values)
    present = values[~missing]
    fill = float(np.median(present)) if len(present) else 0.0
    rate = float(missing.mean())
    if c.kind == "boolean":
        return BooleanFeature(fill=fill, true_rate=float((present == 1).sum() / n), missing_rate=rate)
    return NumericFeature(fill=fill, missing_rate=rate)


def columnar(table: Table, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Gives back the table in the Encoder's columnar form ``(numbers, codes)`` for ``pre``."""
    numbers = [c.numbers for c in table.columns if c.numbers is not None]
    codes = []
    for c, f in zip(table.columns, pre.features, strict=True):
        if isinstance(f, CategoricalFeature):
            assert c.codes is not None and c.levels is not None
            vocabulary = np.append(
                pd.Index(f.categories).get_indexer(c.levels), ABSENT
            )  # -1: UNSEEN (pooled)
            codes.append(vocabulary[c.codes])  # code -1 (missing): the appended ABSENT
    n = len(table)
    return (
        np.stack(numbers).T if numbers else np.empty((n, 0)),  # column-major: what encode reads fastest
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
