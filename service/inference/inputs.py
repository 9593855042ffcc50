"""Turns a /predict body into a float32 array ``(B, F)``, or a 4xx error that says what and where.

With an artifact's preprocessing (``encoder``), rows are raw table rows: numbers, strings for categorical
features, true/false, null for missing values; they are encoded into the network's input (``TableRows``),
the raw columns kept for the drift monitor. An all-numeric model still takes the fast paths below.

The common case (rows as JSON arrays of numbers) takes a vectorized path: simdjson parses the numbers into
one buffer. Anything else is decoded by orjson; rows of numbers then take one ``np.array`` call, and anything
unusual the exact path, which walks the rows to name the first bad cell.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from models.errors import InputError
from models.preprocessing import Encoder
from service.errors import BadRequest, PayloadTooLarge, Unprocessable


@dataclass
class TableRows:
    """Raw table rows, encoded: what the network takes and the columnar raw form it came from."""

    x: np.ndarray  # (B, W) float32, the network's input
    numbers: np.ndarray  # (B, numeric and boolean features) float64, NaN where missing
    codes: np.ndarray  # (B, categorical features) int64 vocabulary codes (models.preprocessing)

    def __len__(self) -> int:
        return len(self.x)


# np.array(rows, dtype=np.float32) turns a number beyond float32's range into inf, which the finite checks
# refuse with the exact error, and _finite's float32 sum of large finite numbers may overflow (the float64 one
# then decides); numpy also warns "overflow encountered in cast" or "in reduce", which would only repeat that
# to the server's log. Filtered for this module's calls alone.
warnings.filterwarnings(
    "ignore", "overflow encountered in (cast|reduce)", RuntimeWarning, re.escape(__name__)
)

_MAX_DEPTH = 1024  # orjson's nesting limit
# Below this, orjson + np.array is faster: simdjson's per-document checks cost more than they save on a few
# rows; past it simdjson pulls ahead (the crossover is in docs/PERFORMANCE.md).
SIMDJSON_MIN_BYTES = 4096


def media_type(content_type: bytes) -> bytes:
    """Gives back the media type of a Content-Type value, without parameters, in lower case."""
    return content_type.split(b";", 1)[0].strip().lower()


def parse_body(body: bytes) -> Any:
    """Gives back the decoded JSON; NaN and Infinity literals are decoded so they can be reported by cell."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if str(e).startswith("depth limit exceeded"):
            # Decided here, not by the stdlib below: its own limit moves with the Python version (3.12's
            # parser takes 2,000 levels that 3.11's refuses), and no body of rows nests that deep.
            raise BadRequest(
                f"malformed JSON body: nested more than {_MAX_DEPTH} levels deep ({e})"
            ) from None
        try:  # the stdlib accepts NaN / Infinity, which orjson (rightly) rejects as JSON
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
            raise BadRequest(f"malformed JSON body: {e}") from None


def parse_instances(
    body: bytes, feature_names: list[str], *, max_rows: int, encoder: Encoder | None = None
) -> np.ndarray | TableRows:
    """Gives back the request's rows as a float32 array of shape (B, len(feature_names)), or with an
    ``encoder`` as ``TableRows``."""
    numbers_only = encoder is None or not encoder.categorical
    if numbers_only and len(body) >= SIMDJSON_MIN_BYTES:
        rows = _numeric_rows(body, len(feature_names), max_rows=max_rows)
        if rows is not None:
            return rows if encoder is None else _encoded_numbers(encoder, rows, feature_names)
    instances = _instances(body, max_rows=max_rows)
    if numbers_only and isinstance(instances[0], list) and _only_numbers_after_the_key(body):
        try:
            # Beyond float32's range becomes inf (numpy's warning is filtered, below), null NaN: both fail
            # the finite check. No np.errstate here: entering one costs more than the conversion.
            rows = np.array(instances, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):  # OverflowError: an integer beyond float64
            rows = None
        n = len(feature_names)
        if rows is not None and rows.ndim == 2 and rows.shape[1] == n and _finite(rows):
            return rows if encoder is None else _encoded_numbers(encoder, rows, feature_names)
    if encoder is not None:
        return _parse_table(instances, feature_names, encoder)  # null, strings, true/false: one by one
    return _parse_exactly(instances, feature_names)


def _encoded_numbers(encoder: Encoder, rows: np.ndarray, feature_names: list[str]) -> TableRows:
    _check_booleans(rows, encoder, feature_names)
    numbers = rows.astype(np.float64)
    codes = np.empty((len(rows), 0), dtype=np.int64)
    x = rows if encoder.numeric_only else encoder.encode(numbers, codes)
    return TableRows(x=x, numbers=numbers, codes=codes)


def _parse_table(instances: list[Any], feature_names: list[str], encoder: Encoder) -> TableRows:
    n = len(feature_names)
    index = {name: j for j, name in enumerate(feature_names)}
    raw = []
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            raw.append(_row_from_object(row, i, feature_names, index))
        elif isinstance(row, list):
            if len(row) != n:
                raise Unprocessable(f"expected {n} features, got {len(row)} at row {i}")
            raw.append(row)
        else:
            raise Unprocessable(
                f"expected each row to be a list of {n} values or an object keyed by feature name, "
                f"got {type(row).__name__} at row {i}"
            )
    try:
        numbers, codes = encoder.columns(raw, feature_names)
    except InputError as e:
        raise Unprocessable(str(e)) from None
    return TableRows(x=encoder.encode(numbers, codes), numbers=numbers, codes=codes)


def table_rows_from_columns(
    columns: dict[str, np.ndarray], feature_names: list[str], encoder: Encoder
) -> TableRows:
    """Gives back table rows from one array per feature (the Open Inference Protocol's per-feature tensors):
    numbers (NaN: missing), booleans, or strings and bytes (UTF-8) for categorical features (None: missing).
    The arrays are of one length B; each value is then checked as in a JSON row."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise Unprocessable(
            f"expected every feature's tensor to hold the same number of rows, got {sorted(lengths)}"
        )
    (b,) = lengths
    cells = []
    for name in feature_names:
        values = columns[name].reshape(b)
        if values.dtype.kind == "f":
            cells.append([None if v != v else v for v in values.tolist()])  # NaN: missing
        elif values.dtype.kind in "SO":
            cells.append([_text(v, name, i) for i, v in enumerate(values.tolist())])
        else:
            cells.append(values.tolist())
    rows = [list(row) for row in zip(*cells, strict=True)]
    try:
        numbers, codes = encoder.columns(rows, feature_names)
    except InputError as e:
        raise Unprocessable(str(e)) from None
    return TableRows(x=encoder.encode(numbers, codes), numbers=numbers, codes=codes)


def _text(v: Any, name: str, i: int) -> Any:
    if isinstance(v, float) and v != v:  # NaN: missing
        return None
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            raise Unprocessable(
                f"expected UTF-8 text for feature {name!r} at row {i}, got {v[:40]!r}"
            ) from None
    return v


def _instances(body: bytes, *, max_rows: int) -> list[Any]:
    payload = parse_body(body)
    if not isinstance(payload, dict) or "instances" not in payload:
        got = (
            f"an object with keys {sorted(payload)}" if isinstance(payload, dict) else type(payload).__name__
        )
        raise Unprocessable(f'expected a JSON object {{"instances": [row, ...]}}, got {got}')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise Unprocessable(f"expected 'instances' to be a list of rows, got {type(instances).__name__}")
    if not instances:
        raise Unprocessable("expected at least one row in 'instances', got an empty list")
    if len(instances) > max_rows:
        raise PayloadTooLarge(f"expected at most {max_rows} rows per request, got {len(instances)}")
    return instances


def _finite(rows: np.ndarray) -> bool:
    """Gives back whether every float32 value is finite. First from their float32 sum, a cast-free
    reduction (a NaN or inf propagates into it); only when that sum is not finite, from their float64 sum,
    finite exactly when every value is (no count of finite float32 values overflows float64), which tells
    finite values whose float32 sum overflowed from a NaN or inf. One or two reductions instead of a boolean
    array and its ``all``."""
    return math.isfinite(np.add.reduce(rows, axis=None)) or math.isfinite(
        np.add.reduce(rows, axis=None, dtype=np.float64)
    )


def parse_float32_rows(
    body: bytes, feature_names: list[str], *, max_rows: int, encoder: Encoder | None = None
) -> np.ndarray | TableRows:
    """Gives back an ``application/octet-stream`` body, raw little-endian float32 rows in feature order
    (row-major, no header), as an array (B, F): the bulk path, with no JSON to parse. A model with
    preprocessing takes it when all its features are numeric or boolean (1.0 / 0.0); NaN is then missing."""
    if encoder is not None and encoder.categorical:
        raise Unprocessable(
            "expected JSON rows: this model has categorical features, which a float32 body cannot carry"
        )
    n = len(feature_names)
    row_bytes = 4 * n
    if not body:
        raise Unprocessable(
            f"expected at least one row of {n} float32 values ({row_bytes} bytes), got an empty body"
        )
    if len(body) % row_bytes:
        raise Unprocessable(
            f"expected raw little-endian float32 rows of {n} features ({row_bytes} bytes each), got {len(body)} "
            f"bytes, which is not a whole number of rows"
        )
    rows = len(body) // row_bytes
    if rows > max_rows:
        raise PayloadTooLarge(f"expected at most {max_rows} rows per request, got {rows}")
    out = np.frombuffer(body, dtype="<f4").reshape(rows, n).astype(np.float32)  # a native, writable copy
    if not _finite(out):  # one float32 sum; with an encoder NaN is a missing value, only inf is refused
        bad = np.isinf(out) if encoder is not None else ~np.isfinite(out)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise Unprocessable(
                f"expected a finite number at row {i}, column {j} ({feature_names[j]!r}), got {out[i, j]}"
            )
    return out if encoder is None else _encoded_numbers(encoder, out, feature_names)


def _check_booleans(rows: np.ndarray, encoder: Encoder, feature_names: list[str]) -> None:
    for k, j in enumerate(encoder.numeric):
        if encoder.kinds[j] == "boolean":
            col = rows[:, k]
            bad = np.flatnonzero(~np.isnan(col) & (col != 0) & (col != 1))
            if len(bad):
                raise Unprocessable(
                    f"expected 1.0 (true), 0.0 (false) or NaN (missing) for boolean feature {feature_names[j]!r} "
                    f"at row {bad[0]}, got {col[bad[0]]}"
                )


def _numeric_rows(body: bytes, n: int, *, max_rows: int) -> np.ndarray | None:
    """Gives back the rows of ``{"instances": [[n numbers], ...]}`` parsed by simdjson straight into one
    float64 buffer, with no Python object per number (far faster than orjson + ``np.array`` on large
    bodies); None for anything else, which the paths below then parse or refuse with the exact error."""
    if not _only_numbers_after_the_key(body):  # only the key is a string (the caller checked the size)
        return None
    try:
        doc = simdjson.Parser().parse(body)  # a parser per body: its results must not outlive it
        if not isinstance(doc, simdjson.Object) or len(doc) != 1:
            return None
        instances = doc.get("instances")
        if not isinstance(instances, simdjson.Array) or not 0 < len(instances) <= max_rows:
            return None
        b = len(instances)
        # as_buffer flattens: each row must be one flat array of n numbers (null fails as_buffer), so no
        # "[" but the rows' and the list's. numpy counts bytes faster than bytes.count.
        if np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == ord("[")) != b + 1:
            return None
        if set(map(len, instances)) != {n}:  # type: ignore[arg-type]  # a number row: TypeError
            return None
        flat = np.frombuffer(instances.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, RuntimeError):  # malformed, a non-number, a number beyond float64
        return None
    rows = flat.astype(np.float32).reshape(b, n)  # beyond float32's range: inf, refused by the exact path
    return rows if _finite(rows) else None


def _only_numbers_after_the_key(body: bytes) -> bool:
    """Gives back True when the body's one string is its key and no true/false follows: np.array would
    otherwise turn "1.5" and true into numbers that the exact path must refuse."""
    # Single-byte find() is memchr: three passes over a large body cost a small fraction of what count() and
    # `b"true" in body` would, which took as long as parsing the body.
    key_end = body.find(b'"', body.find(b'"') + 1)
    return (
        body.find(b'"', key_end + 1) == -1
        and body.find(b"t", key_end) == -1
        and body.find(b"f", key_end) == -1
    )


def _parse_exactly(instances: list[Any], feature_names: list[str]) -> np.ndarray:
    n = len(feature_names)
    index = {name: j for j, name in enumerate(feature_names)}
    out = np.empty((len(instances), n), dtype=np.float32)
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            values = _row_from_object(row, i, feature_names, index)
        elif isinstance(row, list):
            if len(row) != n:
                raise Unprocessable(f"expected {n} features, got {len(row)} at row {i}")
            values = row
        else:
            raise Unprocessable(
                f"expected each row to be a list of {n} numbers or an object keyed by feature name, "
                f"got {type(row).__name__} at row {i}"
            )
        for j, v in enumerate(values):
            out[i, j] = _number(v, i, j, feature_names[j])
    return out


def _row_from_object(
    row: dict[str, Any], i: int, feature_names: list[str], index: dict[str, int]
) -> list[Any]:
    unknown = [k for k in row if k not in index]
    if unknown:
        raise Unprocessable(
            f"unknown feature {unknown[0]!r} at row {i}; expected the {len(feature_names)} names from /metadata"
        )
    missing = [name for name in feature_names if name not in row]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise Unprocessable(f"missing feature {missing[0]!r}{more} at row {i}")
    return [row[name] for name in feature_names]


def _number(v: Any, i: int, j: int, name: str) -> float:
    where = f"at row {i}, column {j} ({name!r})"
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Unprocessable(f"expected a number {where}, got {type(v).__name__} {v!r}")
    try:
        f = float(v)
    except OverflowError:  # an integer literal too long for any float; too long to echo back, too
        raise Unprocessable(
            f"expected a finite number {where}, got an integer of {len(str(v))} digits"
        ) from None
    fits = math.isfinite(float(np.float32(f)))  # beyond float32's range: inf
    if not math.isfinite(f) or not fits:
        beyond = "" if not math.isfinite(f) else " (beyond float32's range of about ±3.4e38)"
        raise Unprocessable(f"expected a finite number {where}, got {v!r}{beyond}")
    return f
