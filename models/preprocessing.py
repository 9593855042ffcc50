"""Raw table rows -> the network's float32 input: the preprocessing a format 2 artifact carries.

Training learns it from the training split (``training/tabular.py``); serving applies exactly this and
nothing else, in numpy (no pandas at serving time). docs/ARTIFACT.md, "Preprocessing", is the format.

    encoder = Encoder(manifest.preprocessing)
    x = encoder.encode_rows(rows, feature_names)    # rows: lists of numbers, strings, booleans, None
    x = encoder.encode(numbers, codes)              # the columnar form both sides share, (B, width)

A feature is one of three kinds, each encoded into one or more input columns:

- numeric: the value, a missing value replaced by the training split's median (``fill``), plus a
  missing indicator column (1.0 where missing) when the training split had missing values;
- boolean: 1.0 for true, 0.0 for false, then exactly as numeric;
- categorical: one-hot over the training vocabulary, plus an ``<other>`` column when rare categories
  were pooled in training, plus a ``<missing>`` column when the training split had missing values. A
  category never seen in training goes to ``<other>`` when there is one, else to no column at all
  (every one-hot column 0); a missing value without a ``<missing>`` column is treated the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.errors import InputError

DEFAULT_MISSING_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?")
TRUE_TOKENS = ("true", "t", "yes", "y", "1")  # compared lowercased, after stripping spaces
FALSE_TOKENS = ("false", "f", "no", "n", "0")
OTHER = "<other>"  # the encoded column of pooled rare and unseen categories: "<feature>=<other>"
MISSING = "<missing>"  # the encoded column of a missing category: "<feature>=<missing>"
INDICATOR_SUFFIX = ":missing"  # the missing indicator column of a numeric or boolean feature

# Vocabulary codes, the columnar form of a categorical value: an index into ``categories``, or these.
SMALL_BATCH = 8  # up to this many rows ``encode`` runs in Python, beyond it in numpy
FLOAT32_ROUNDS_TO_INF = 3.4028235677973366e38  # float32's largest value plus half a step: from here on, inf
_NO_COLUMN = 2**40  # beyond any row's start + width: clipped to the scratch value
UNSEEN = -1  # a category not in the vocabulary: pooled in training, or never seen there
ABSENT = -2  # a missing value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Rate = Annotated[float, Field(ge=0, le=1)]


class NumericFeature(_Strict):
    """A number; a missing one becomes ``fill``, with an indicator column when ``missing_rate > 0``."""

    kind: Literal["numeric"] = "numeric"
    fill: float  # the training split's median of the present values
    missing_rate: Rate  # share of training rows where it was missing; > 0 adds the indicator column

    @property
    def indicator(self) -> bool:
        return self.missing_rate > 0


class BooleanFeature(_Strict):
    """True / false as 1.0 / 0.0, then encoded exactly as a numeric feature."""

    kind: Literal["boolean"] = "boolean"
    fill: float  # the training split's median (0.0 or 1.0, or 0.5 on a tie)
    true_rate: Rate  # share of training rows that were true (drift's reference)
    missing_rate: Rate

    @property
    def indicator(self) -> bool:
        return self.missing_rate > 0


class CategoricalFeature(_Strict):
    """One-hot over ``categories``, then ``<other>`` (when ``other_rate > 0``) and ``<missing>`` (when
    ``missing_rate > 0``)."""

    kind: Literal["categorical"] = "categorical"
    categories: list[str] = Field(min_length=1)  # the training vocabulary, most frequent first
    frequencies: list[Rate]  # share of training rows of each category, aligned with ``categories``
    other_rate: Rate  # share of training rows whose (rare) category was pooled into ``<other>``
    missing_rate: Rate

    @property
    def other(self) -> bool:
        return self.other_rate > 0

    @property
    def missing(self) -> bool:
        return self.missing_rate > 0

    @property
    def width(self) -> int:
        return len(self.categories) + self.other + self.missing


Feature = Annotated[NumericFeature | BooleanFeature | CategoricalFeature, Field(discriminator="kind")]


class Preprocessing(_Strict):
    """The ``preprocessing`` section of a format 2 manifest; ``features`` follows ``feature_names``."""

    missing_tokens: list[str]  # strings that mean "missing", compared after stripping surrounding spaces
    features: list[Feature]

    @property
    def width(self) -> int:
        """The number of input columns the network takes."""
        return sum(f.width if isinstance(f, CategoricalFeature) else 1 + f.indicator for f in self.features)


def input_columns(feature_names: Sequence[str], pre: Preprocessing | None) -> list[str]:
    """Gives back the name of each input column of the network: the features, or what ``pre`` makes."""
    return list(feature_names) if pre is None else encoded_names(feature_names, pre)


def encoded_names(feature_names: Sequence[str], pre: Preprocessing) -> list[str]:
    """Gives back the name of every input column the network takes, in order."""
    out: list[str] = []
    for name, f in zip(feature_names, pre.features, strict=True):
        if isinstance(f, CategoricalFeature):
            out += [f"{name}={c}" for c in f.categories]
            out += [f"{name}={OTHER}"] * f.other + [f"{name}={MISSING}"] * f.missing
        else:
            out += [name] + [name + INDICATOR_SUFFIX] * f.indicator
    return out


class Encoder:
    """The preprocessing compiled to index arrays, so encoding a batch is a few numpy operations.

    The columnar form: ``numbers`` (B, number of numeric and boolean features) float64 with NaN where
    missing, in feature order; ``codes`` (B, number of categorical features) int64 vocabulary codes
    (an index into ``categories``, ``UNSEEN`` or ``ABSENT``).
    """

    def __init__(self, pre: Preprocessing) -> None:
        self.preprocessing = pre
        self.width = pre.width
        self.missing_tokens = frozenset(t.strip() for t in pre.missing_tokens)
        self.numeric: list[int] = []  # feature index of each numeric or boolean feature
        self.categorical: list[int] = []  # feature index of each categorical feature
        self.vocabularies: list[dict[str, int]] = []  # category -> code, per categorical feature
        value_cols, fills, indicator_of, indicator_cols = [], [], [], []
        offsets, other_cols, missing_cols = [], [], []
        col = 0
        for j, f in enumerate(pre.features):
            if isinstance(f, CategoricalFeature):
                self.categorical.append(j)
                self.vocabularies.append({c: k for k, c in enumerate(f.categories)})
                offsets.append(col)
                col += len(f.categories)
                other_cols.append(col if f.other else -1)
                col += f.other
                # A missing value with no <missing> column is treated as an unseen category.
                missing_cols.append(col if f.missing else other_cols[-1])
                col += f.missing
            else:
                k = len(self.numeric)
                self.numeric.append(j)
                value_cols.append(col)
                fills.append(f.fill)
                col += 1
                if f.indicator:
                    indicator_of.append(k)
                    indicator_cols.append(col)
                    col += 1
        self._value_cols = np.array(value_cols, dtype=np.intp)
        self._indicator_col_of = np.full(len(value_cols), -1, dtype=np.intp)  # per numeric feature; -1: none
        self._indicator_col_of[indicator_of] = indicator_cols
        # Per categorical feature, the input column of each code from ABSENT (-2) up: a flat lookup table.
        table: list[int] = []
        code_offsets: list[int] = []
        for f_offset, other, missing, vocab in zip(
            offsets, other_cols, missing_cols, self.vocabularies, strict=True
        ):
            code_offsets.append(len(table) - ABSENT)  # code c sits at table[offset + c]
            table += [missing, other, *range(f_offset, f_offset + len(vocab))]
        self._code_columns = np.array([c if c >= 0 else _NO_COLUMN for c in table], dtype=np.int64)
        self._code_offsets = np.array(code_offsets, dtype=np.int64)
        self._fills = np.array(fills, dtype=np.float64)
        self._indicator_of = np.array(indicator_of, dtype=np.intp)
        self._indicator_cols = np.array(indicator_cols, dtype=np.intp)
        self._offsets = np.array(offsets, dtype=np.int64)
        self._other_cols = np.array(other_cols, dtype=np.int64)
        self._missing_cols = np.array(missing_cols, dtype=np.int64)
        self.kinds = [f.kind for f in pre.features]
        self._numeric_plan = list(zip(range(len(value_cols)), value_cols, fills, strict=True))
        self._indicator_plan = list(zip(indicator_of, indicator_cols, strict=True))
        self._categorical_plan = (offsets, other_cols, missing_cols)

    @property
    def numeric_only(self) -> bool:
        """True when the network takes the raw numbers as they are: no category, no indicator."""
        return not self.categorical and self.width == len(self.numeric)

    def encode(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Gives back the network's input (B, width) float32 for the columnar form of B rows."""
        b = len(numbers) if len(self.numeric) else len(codes)
        if b <= SMALL_BATCH:
            return self._encode_few(numbers, codes)
        w = self.width
        # One scratch value past the end takes the values that go to no column, so the one-hot scatter
        # below needs no mask (a mask made it half the encoding time of 100,000 rows).
        flat = np.zeros(b * w + 1, dtype=np.float32)
        x = flat[: b * w].reshape(b, w)
        if len(self.numeric):
            if numbers.flags.f_contiguous:  # each feature's values side by side: 3x faster column by column
                for j, col in enumerate(self._value_cols.tolist()):
                    x[:, col] = numbers[:, j]
            else:
                x[:, self._value_cols] = numbers
            rows, k = np.nonzero(np.isnan(numbers))  # missing values are few: fix them where they are
            x[rows, self._value_cols[k]] = self._fills[k]
            has = self._indicator_col_of[k] >= 0
            x[rows[has], self._indicator_col_of[k[has]]] = 1.0
        if len(self.categorical):
            # Each feature's codes (ABSENT = -2 .. K - 1) index its slice of one table of input columns.
            cols = self._code_columns[codes + self._code_offsets]  # (B, Fc); _NO_COLUMN: none
            starts = np.arange(0, b * w, w)[:, None]  # (B, 1)
            flat[np.minimum(starts + cols, b * w)] = 1.0
        return x

    def _encode_few(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``encode`` for a few rows, in Python: a one-row request spends 30 µs in numpy calls otherwise."""
        out = []
        for num, code in zip(numbers.tolist(), codes.tolist(), strict=True):
            x = [0.0] * (self.width + 1)  # the last one: the scratch value for "no column"
            for k, col, fill in self._numeric_plan:
                v = num[k]
                x[col] = fill if v != v else v  # NaN: missing
            for k, ind in self._indicator_plan:
                x[ind] = 1.0 if num[k] != num[k] else 0.0
            for c, offset, other, missing in zip(code, *self._categorical_plan, strict=True):
                col = offset + c if c >= 0 else missing if c == ABSENT else other
                x[col if col >= 0 else self.width] = 1.0
            out.append(x[: self.width])
        return np.array(out, dtype=np.float32).reshape(len(out), self.width)

    def encode_rows(self, rows: Sequence[Sequence[Any]], feature_names: Sequence[str]) -> np.ndarray:
        """Gives back the network's input for raw rows (lists in feature order); raises ``InputError``
        naming the row and the feature for a value of the wrong kind."""
        return self.encode(*self.columns(rows, feature_names))

    def columns(
        self, rows: Sequence[Sequence[Any]], feature_names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gives back ``(numbers, codes)``, the columnar form of raw rows in feature order."""
        numbers = np.empty((len(rows), len(self.numeric)), dtype=np.float64)
        codes = np.empty((len(rows), len(self.categorical)), dtype=np.int64)
        for i, row in enumerate(rows):
            for k, j in enumerate(self.numeric):
                numbers[i, k] = self.number(row[j], i, feature_names[j], self.kinds[j])
            for k, j in enumerate(self.categorical):
                codes[i, k] = self.code(row[j], i, feature_names[j], k)
        return numbers, codes

    def number(self, v: Any, i: int, name: str, kind: str) -> float:
        """Gives back a numeric or boolean value as a float, NaN when missing."""
        if v is None:
            return math.nan
        if kind == "boolean":
            return self._boolean(v, i, name)
        if isinstance(v, str):
            if v.strip() in self.missing_tokens:
                return math.nan
            raise InputError(
                f"expected a number (or null when missing) for numeric feature {name!r} at row {i}, got "
                f"the string {_clip(v)!r}",
                row=i,
                feature=name,
            )
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(
                f"expected a number (or null when missing) for numeric feature {name!r} at row {i}, got "
                f"{_describe(v)}",
                row=i,
                feature=name,
            )
        return finite_float32(v, i, name)

    def _boolean(self, v: Any, i: int, name: str) -> float:
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, int | float) and v in (0, 1):
            return float(v)
        if isinstance(v, str):
            s = v.strip()
            if s in self.missing_tokens:
                return math.nan
            if s.lower() in TRUE_TOKENS:
                return 1.0
            if s.lower() in FALSE_TOKENS:
                return 0.0
        raise InputError(
            f"expected true or false (or null when missing) for boolean feature {name!r} at row {i}, got "
            f"{_describe(v)}",
            row=i,
            feature=name,
        )

    def code(self, v: Any, i: int, name: str, k: int) -> int:
        """Gives back the vocabulary code of categorical feature ``k``'s value."""
        if v is None:
            return ABSENT
        if not isinstance(v, str):
            raise InputError(
                f"expected a category (a string, or null when missing) for categorical feature {name!r} at "
                f"row {i}, got {_describe(v)}",
                row=i,
                feature=name,
            )
        code = self.vocabularies[k].get(v)
        if code is not None:
            return code
        s = v.strip()
        if s in self.missing_tokens:
            return ABSENT
        return self.vocabularies[k].get(s, UNSEEN)


def finite_float32(v: float, i: int, name: str) -> float:
    """Gives back ``float(v)``; raises ``InputError`` unless it is finite and within float32's range."""
    try:
        f = float(v)
        if -FLOAT32_ROUNDS_TO_INF < f < FLOAT32_ROUNDS_TO_INF:
            return f
    except OverflowError:  # an integer too long for any float; too long to echo back, too
        raise InputError(
            f"expected a finite number for feature {name!r} at row {i}, got an integer of {len(str(v))} digits",
            row=i,
            feature=name,
        ) from None
    with np.errstate(over="ignore"):
        fits = math.isfinite(float(np.float32(f)))
    if not fits:
        beyond = " (beyond float32's range of about ±3.4e38)" if math.isfinite(f) else ""
        raise InputError(
            f"expected a finite number for feature {name!r} at row {i}, got {v!r}{beyond}",
            row=i,
            feature=name,
        )
    return f


def _describe(v: Any) -> str:
    if isinstance(v, str):
        return f"the string {_clip(v)!r}"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, int | float):
        return f"the number {v!r}"
    return (
        f"a JSON {'array' if isinstance(v, list) else 'object' if isinstance(v, dict) else type(v).__name__}"
    )


def _clip(s: str, limit: int = 60) -> str:
    return s if len(s) <= limit else s[:limit] + "…"
