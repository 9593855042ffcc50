"""The user's file as a pandas DataFrame: a CSV read by pyarrow, or a Parquet file.

    frame = read_file("houses.csv", missing_tokens=("", "NA"), text_columns=("zip",))

Cells equal to a missing token become null (text cells are compared again after stripping spaces, in
``training/tabular.py``). Rows in messages are data rows counted from 1, the header not counted (file
line = row + 1 when no cell spans lines and no line is blank).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from training.errors import DataError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
ROWS_NOTE = "(data rows count from 1, header not counted)"
_SNIFF_BYTES = 8192


def read_file(
    path: str | Path, *, missing_tokens: Sequence[str], text_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Gives back the table in the CSV or Parquet file at ``path``; raises ``DataError`` naming the problem.

    ``text_columns`` are read as text even when they look numeric (``--categorical``), so their
    categories are the file's own spellings.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES or head.startswith(b"PAR1"):
        if suffix not in PARQUET_SUFFIXES:
            raise DataError(f"{path}: this is a Parquet file; name it .parquet to read it as one")
        return _read_parquet(path)
    if suffix not in CSV_SUFFIXES:
        raise DataError(
            f"{path}: expected a CSV (.csv) or Parquet (.parquet) file, got {suffix or 'a name without a suffix'}"
        )
    if b"\x00" in head:
        raise DataError(f"{path}: not a CSV file: it holds binary data (NUL bytes in its first 8 KB)")
    return _read_csv(path, missing_tokens, text_columns, delimiter="\t" if suffix == ".tsv" else ",")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None


def _read_csv(
    path: Path, missing_tokens: Sequence[str], text_columns: Sequence[str], *, delimiter: str
) -> pd.DataFrame:
    ragged: list[pa_csv.InvalidRow] = []

    def on_ragged_row(row: pa_csv.InvalidRow) -> str:
        ragged.append(row)
        return "skip"

    try:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_ragged_row),
            convert_options=pa_csv.ConvertOptions(
                null_values=list(missing_tokens),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                column_types={name: pa.string() for name in text_columns},
                timestamp_parsers=[],  # dates stay text: a model takes numbers and categories
            ),
        )
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise DataError(f"{path}: the file is empty; expected a header row and data rows") from None
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    _check_header(path, table.column_names)
    if ragged:
        _raise_first_ragged_row(path, delimiter)
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    if binary:
        raise DataError(f"{path}: not UTF-8 text (column {binary[0]!r} holds bytes that are not UTF-8)")
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has a header row but no data rows")
    return table.to_pandas(
        split_blocks=True
    )  # no consolidation into 2-D blocks: the columns are used one by one


def _check_header(path: Path, names: list[str]) -> None:
    for j, name in enumerate(names, start=1):
        if not name.strip():
            raise DataError(f"{path}: column {j} has no name in the header row")
    stripped = [n.strip() for n in names]
    repeated = sorted({n for n in stripped if stripped.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column names must be unique, repeated: {repeated}")


def _raise_first_ragged_row(path: Path, delimiter: str) -> None:
    """Reads the file again on one thread, where pyarrow knows row numbers, to name the first bad row."""
    found: list[pa_csv.InvalidRow] = []

    def first(row: pa_csv.InvalidRow) -> str:
        found.append(row)
        return "error"

    with contextlib.suppress(pa.ArrowInvalid):
        pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, invalid_row_handler=first),
            convert_options=pa_csv.ConvertOptions(column_types={}, strings_can_be_null=True),
        )
    row = found[0]
    where = f"row {row.number - 1}" if row.number is not None else f"the row {row.text[:60]!r}"
    raise DataError(
        f"{path}: {where} has {row.actual_columns} fields but the header has {row.expected_columns} {ROWS_NOTE}"
    )
