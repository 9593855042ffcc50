"""The Open Inference Protocol's inference messages, as pure functions: bytes in, rows out; outputs in, bytes out.

    request = parse_infer_request(body, header_length, feature_names=..., signature=..., max_rows=...)
    request.rows                      # float32 (B, F), features in manifest order
    encoder = InferResponseEncoder(model_name="breast_cancer", model_version="1", signature=..., class_labels=[...])
    body, headers = encoder.encode(request, out, logits)   # JSON, or JSON + binary tensors

The request is the protocol's JSON object (kserve/open-inference-protocol, specification/protocol/
inference_rest.md), optionally followed by raw tensors as in Triton's binary tensor data extension: the
``Inference-Header-Content-Length`` header gives the JSON's length, each binary input's ``parameters`` its
``binary_data_size``, and the bytes follow the JSON in tensor order, little-endian, row-major. The media type
plays no part: a body is read the same way with no Content-Type, ``application/json`` or
``application/octet-stream``.

Inputs: one tensor ``input`` of shape [B, F] (rows in feature order), or one tensor per feature, named by the
feature, of shape [B] or [B, 1]. FP32, FP64 and the integer datatypes are accepted and converted to float32;
any other datatype, a shape that does not match the data, NaN or infinity, and an unknown output name are a
``BadRequest`` (400) that names the tensor and says what was expected and what came in.

Outputs (models/signature.py): ``probabilities`` and ``label`` for a classifier (``logits`` on request),
``value`` for a regressor; each as JSON ``data`` or, with ``binary_data``, raw bytes after the JSON (BYTES as a
4-byte little-endian length and the bytes of each element).

Written by hand rather than with pydantic: a one-row request is parsed in a few microseconds here, and the
binary extension's offset arithmetic has no library.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson

from models.preprocessing import Encoder
from models.signature import INPUT, LABEL, LOGITS, PROBABILITIES, VALUE, Signature
from service.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.inference.inputs import TableRows, parse_body, table_rows_from_columns

Headers = list[tuple[bytes, bytes]]

HEADER_LENGTH = b"inference-header-content-length"  # as ASGI gives header names: lower case
JSON_MEDIA_TYPE = b"application/json"
BINARY_MEDIA_TYPE = b"application/octet-stream"
# Read alike: tritonclient sends no Content-Type, and `curl -d` sends application/x-www-form-urlencoded.
READ_MEDIA_TYPES = (b"", JSON_MEDIA_TYPE, BINARY_MEDIA_TYPE, b"application/x-www-form-urlencoded")

# Numeric datatypes a client may send, with their little-endian numpy type for binary data.
NUMERIC_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
_PROTOCOL_DATATYPES = (*NUMERIC_DATATYPES, "BOOL", "FP16", "BF16", "BYTES")
_MAX_DIM = 2**64 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
SMALL_ROWS = 8  # up to this many rows, Python lists encode faster than numpy's calls cost (docs/PERFORMANCE.md)  # the protocol: each dimension must be representable as an unsigned 64-bit integer


class RequestedOutput(NamedTuple):
    name: str
    binary: bool  # as raw bytes after the JSON (binary tensor data extension)


@dataclass(slots=True)
class InferRequest:
    rows: np.ndarray | TableRows  # float32 (B, F), features in manifest order; a table model's rows encoded
    outputs: tuple[RequestedOutput, ...]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_logits(self) -> bool:
        return any(o.name == LOGITS for o in self.outputs)


# ---------------------------------------------------------------------------------------------- request


def parse_infer_request(
    body: bytes,
    header_length: bytes | None,
    *,
    feature_names: list[str],
    signature: Signature,
    max_rows: int,
    encoder: Encoder | None = None,
) -> InferRequest:
    """Gives back the rows and requested outputs of an inference request; ``header_length`` is the value of
    its ``Inference-Header-Content-Length`` header, if any. Raises ``BadRequest`` (400) or
    ``PayloadTooLarge`` (413, more than ``max_rows`` rows)."""
    header, binary = _split_body(body, header_length)
    try:
        payload = parse_body(header)
    except BadRequest as e:
        if header_length is not None:
            raise
        hint = "a body with binary tensors after its JSON needs an Inference-Header-Content-Length header"
        raise BadRequest(f"{e.message}; {hint}") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"expected an inference request JSON object, got {type(payload).__name__}")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"expected 'id' to be a string, got {type(request_id).__name__} {request_id!r}")
    parameters = _parameters(payload.get("parameters"), "the request")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        got = "nothing" if inputs is None else f"{type(inputs).__name__} {_clip(inputs)}"
        raise BadRequest(f"expected 'inputs' to be a non-empty list of tensors, got {got}")
    # np.array turns a JSON true among numbers into 1.0: only a header with a true or false in it (anywhere)
    # has each tensor's data walked for booleans.
    maybe_booleans = b"true" in header or b"false" in header
    rows: np.ndarray | TableRows | None = None
    if encoder is not None:
        rows = _table_rows(
            inputs, binary, header_length is not None, len(header), feature_names, encoder, max_rows
        )
    elif not (maybe_booleans or binary):
        rows = _common_rows(inputs, len(feature_names), max_rows)
    if rows is None:
        tensors = _read_tensors(inputs, binary, header_length is not None, len(header), maybe_booleans)
        rows = _rows(tensors, feature_names, max_rows=max_rows)
    outputs = _requested_outputs(payload.get("outputs"), parameters, signature)
    return InferRequest(rows=rows, outputs=outputs, id=request_id, parameters=parameters)


def _common_rows(inputs: list[Any], n: int, max_rows: int) -> np.ndarray | None:
    """Gives back the rows of the common request, one FP32 tensor ``input`` [B, F] of flat JSON numbers that
    are all finite in float32, in a handful of checks; None for anything else, which the exact path then reads
    or refuses with the error it deserves. (The exact path costs a one-row request as much as its parse.)"""
    try:
        (spec,) = inputs
        if spec["name"] != INPUT or spec["datatype"] != "FP32" or "parameters" in spec:
            return None
        batch, width = spec["shape"]
        data = spec["data"]
    except (KeyError, TypeError, ValueError):  # not one tensor object with a 2-dimensional shape and data
        return None
    if type(batch) is not int or type(width) is not int or width != n or not 0 < batch <= max_rows:
        return None
    if type(data) is not list or len(data) != batch * n:
        return None
    values = np.array(data)  # flat numbers: float64 or int64; a string, a list or None: another dtype
    if values.dtype.kind not in "fi" or values.ndim != 1:
        return None
    # NaN fails the comparison; with every value in float32's range the cast cannot overflow (and warn).
    if values.dtype.kind == "f" and not np.abs(values).max() <= FLOAT32_MAX:
        return None
    return values.astype(np.float32).reshape(batch, n)


def _split_body(body: bytes, header_length: bytes | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not text.isdigit():
        raise BadRequest(
            "expected the Inference-Header-Content-Length header to be the JSON header's length in bytes, got "
            f"{header_length.decode('latin-1')!r}"
        )
    n = int(text)
    if n > len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length says the JSON header is {n} bytes, but the body holds only "
            f"{len(body)} bytes"
        )
    return body[:n], body[n:]


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"expected the parameters of {where} to be an object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class _Tensor:
    name: str
    values: np.ndarray  # of the declared shape, in the datatype sent


def _read_tensors(
    inputs: list[Any], binary: bytes, has_header: bool, header_bytes: int, maybe_booleans: bool
) -> list[_Tensor]:
    tensors, offset, seen = [], 0, set()
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict):
            raise BadRequest(f"expected inputs[{i}] to be a tensor object, got {type(spec).__name__}")
        name = spec.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"expected inputs[{i}] to have a string 'name', got {_clip(name)}")
        if name in seen:
            raise BadRequest(f"input {name!r} is given twice")
        seen.add(name)
        datatype = _datatype(name, spec.get("datatype"))
        shape = _shape(name, spec.get("shape"))
        count = math.prod(shape)  # at most two dimensions (_shape), so no runaway integer
        params = _parameters(spec.get("parameters"), f"input {name!r}")
        _refuse_unsupported(params, f"input {name!r}")
        size = params.get("binary_data_size")
        if size is None:
            values = _json_values(name, spec.get("data"), datatype, shape, count, maybe_booleans)
        else:
            if "data" in spec:
                raise BadRequest(f"input {name!r} has both 'data' and binary_data_size; expected one of them")
            if not has_header:
                raise BadRequest(
                    f"input {name!r} has binary_data_size but the request has no Inference-Header-Content-"
                    "Length header to say where its JSON ends"
                )
            values = _binary_values(name, size, datatype, shape, count, binary, offset)
            offset += size
        tensors.append(_Tensor(name, values))
    if offset != len(binary):
        raise BadRequest(
            f"the inputs' binary_data_size add up to {offset} bytes, but {len(binary)} bytes follow the "
            f"{header_bytes}-byte JSON header"
        )
    return tensors


def _datatype(name: str, datatype: Any) -> str:
    if datatype in NUMERIC_DATATYPES:
        return str(datatype)
    if datatype in _PROTOCOL_DATATYPES:
        got = f"datatype {datatype}"
    else:
        got = f"{_clip(datatype)}, which is not a protocol datatype"
    raise BadRequest(
        f"input {name!r}: expected datatype FP32 (or FP64 or an integer type, converted to FP32), got {got}"
    )


def _shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= _MAX_DIM for d in shape):
        raise BadRequest(
            f"input {name!r}: expected 'shape' to be a list of non-negative integers, got {_clip(shape)}"
        )
    if not 1 <= len(shape) <= 2:
        raise BadRequest(
            f"input {name!r}: expected a shape of 1 or 2 dimensions ([B, F], [B] or [B, 1]), got {shape}"
        )
    return shape


def _json_values(
    name: str, data: Any, datatype: str, shape: list[int], count: int, maybe_booleans: bool
) -> np.ndarray:
    if not isinstance(data, list):
        got = "no 'data' and no binary_data_size" if data is None else f"{type(data).__name__} {_clip(data)}"
        raise BadRequest(
            f"input {name!r}: expected 'data' to be a list of numbers (flat or nested), got {got}"
        )
    try:
        with np.errstate(over="ignore"):
            values = np.array(data)  # nested lists become dimensions; no dtype, so "1" and true stay visible
    except (ValueError, OverflowError):  # ragged nesting
        raise BadRequest(
            f"input {name!r}: expected 'data' nested as its shape {shape} (or flat), got lists of unequal lengths"
        ) from None
    if values.dtype.kind not in "iuf" or (maybe_booleans and _holds_booleans(data)):
        raise BadRequest(
            f"input {name!r}: expected {count} numbers as 'data', got {_what_is_not_a_number(data)}"
        )
    if values.size != count:
        raise BadRequest(
            f"input {name!r}: shape {shape} holds {count} values, but 'data' holds {values.size}"
        )
    if values.ndim > 1 and list(values.shape) != shape:
        raise BadRequest(
            f"input {name!r}: 'data' is nested as {list(values.shape)}, which is not its shape {shape}"
        )
    if datatype not in ("FP32", "FP64"):
        if values.dtype.kind == "f":
            raise BadRequest(
                f"input {name!r}: datatype {datatype} but 'data' holds numbers that are not integers"
            )
        info = np.iinfo(NUMERIC_DATATYPES[datatype])
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise BadRequest(
                f"input {name!r}: datatype {datatype} holds {info.min}..{info.max}, 'data' goes beyond"
            )
    return values.reshape(shape)


def _holds_booleans(data: list[Any]) -> bool:
    return any(type(v) is bool for v in _flatten(data))


def _flatten(data: list[Any]) -> Iterator[Any]:
    for v in data:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


def _what_is_not_a_number(data: list[Any]) -> str:
    for v in _flatten(data):
        if type(v) is bool or not isinstance(v, int | float):
            return f"{type(v).__name__} {_clip(v)}"
        if isinstance(v, int) and not -(2**63) <= v < 2**64:
            return f"an integer of {len(str(v))} digits"
    return "something else"


def _binary_values(
    name: str, size: Any, datatype: str, shape: list[int], count: int, binary: bytes, offset: int
) -> np.ndarray:
    dtype = NUMERIC_DATATYPES[datatype]
    if type(size) is not int or size < 0:
        raise BadRequest(f"input {name!r}: expected binary_data_size to be a byte count, got {_clip(size)}")
    expected = count * dtype.itemsize
    if size != expected:
        raise BadRequest(
            f"input {name!r}: shape {shape} of {datatype} is {expected} bytes, but binary_data_size says {size}"
        )
    if offset + size > len(binary):
        raise BadRequest(
            f"input {name!r}: expected {size} bytes of binary data at offset {offset} after the JSON header, "
            f"but only {max(len(binary) - offset, 0)} bytes are there"
        )
    return np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)


def _rows(tensors: list[_Tensor], feature_names: list[str], *, max_rows: int) -> np.ndarray:
    """Gives back the float32 rows (B, F) that the tensors carry: ``input`` alone, or one tensor per feature."""
    n = len(feature_names)
    names = [t.name for t in tensors]
    if INPUT in names:
        if len(tensors) > 1:
            others = [name for name in names if name != INPUT]
            raise BadRequest(
                f"expected either one tensor {INPUT!r} or one tensor per feature, got {INPUT!r} and {others}"
            )
        values = tensors[0].values
        if values.ndim != 2 or values.shape[1] != n:
            raise BadRequest(
                f"input {INPUT!r}: expected shape [B, {n}] (rows of the {n} features), got {list(values.shape)}"
            )
        rows = _to_float32(values, INPUT, max_rows=max_rows)
        return rows if rows.flags.writeable else rows.copy()
    index = {name: j for j, name in enumerate(feature_names)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise BadRequest(
            f"unknown input {unknown[0]!r}: expected one tensor {INPUT!r} of shape [B, {n}], or one tensor per "
            f"feature named as in the model metadata ({_clip(feature_names)})"
        )
    _check_every_feature(names, feature_names)
    batch = tensors[0].values.shape[0]
    out = np.empty((batch, n), dtype=np.float32)
    for t in tensors:
        if t.values.shape not in ((batch,), (batch, 1)):
            raise BadRequest(
                f"input {t.name!r}: expected shape [{batch}] or [{batch}, 1] like {tensors[0].name!r}, got "
                f"{list(t.values.shape)}"
            )
        out[:, index[t.name]] = _to_float32(t.values.reshape(batch), t.name, max_rows=max_rows)
    return out


def _to_float32(values: np.ndarray, name: str, *, max_rows: int) -> np.ndarray:
    batch = values.shape[0]
    if batch == 0:
        raise BadRequest(f"input {name!r}: expected at least one row, got shape {list(values.shape)}")
    if batch > max_rows:
        raise PayloadTooLarge(f"expected at most {max_rows} rows per request, got {batch} in input {name!r}")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused below
        rows = values if values.dtype == np.float32 and values.dtype.isnative else values.astype(np.float32)
    finite = np.isfinite(rows)
    if not finite.all():
        where = [int(k) for k in np.argwhere(~finite)[0]]
        sent = values[tuple(where)]
        beyond = " (beyond float32's range of about ±3.4e38)" if np.isfinite(sent) else ""
        raise BadRequest(f"input {name!r}: expected finite numbers, got {sent} at index {where}{beyond}")
    return rows


def _requested_outputs(
    outputs: Any, parameters: dict[str, Any], signature: Signature
) -> tuple[RequestedOutput, ...]:
    binary_default = _flag(parameters, "binary_data_output", "the request")
    if outputs is None:
        return _default_outputs(signature.default_outputs, binary_default)
    if not isinstance(outputs, list) or not outputs:
        raise BadRequest(
            f"expected 'outputs' to be a non-empty list of {{\"name\": ...}}, got {_clip(outputs)}"
        )
    requested, seen = [], set()
    for i, spec in enumerate(outputs):
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise BadRequest(f"expected outputs[{i}] to be an object with a string 'name', got {_clip(spec)}")
        if signature.output(name) is None:
            raise BadRequest(f"unknown output {name!r}: this model gives {', '.join(signature.output_names)}")
        if name in seen:
            raise BadRequest(f"output {name!r} is requested twice")
        seen.add(name)
        params = _parameters(spec.get("parameters"), f"output {name!r}")
        _refuse_unsupported(params, f"output {name!r}")
        binary = (
            _flag(params, "binary_data", f"output {name!r}") if "binary_data" in params else binary_default
        )
        requested.append(RequestedOutput(name, binary))
    return tuple(requested)


@functools.lru_cache(maxsize=64)  # keyed by the names (their hashes are cached): built once, not per request
def _default_outputs(names: tuple[str, ...], binary: bool) -> tuple[RequestedOutput, ...]:
    return tuple(RequestedOutput(name, binary) for name in names)


def _refuse_unsupported(parameters: dict[str, Any], where: str) -> None:
    """Raises BadRequest for the parameters of Triton extensions that bnserve does not implement, which would
    otherwise be ignored and give the client something other than it asked for."""
    if "classification" in parameters:
        raise BadRequest(
            f"{where}: the classification extension is not supported; ask for the 'label' output (and "
            "'probabilities') instead"
        )
    if any(key.startswith("shared_memory_") for key in parameters):
        raise BadRequest(f"{where}: shared memory is not supported; send the tensor as JSON or binary data")


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if type(value) is not bool:
        raise BadRequest(f"expected parameter {key!r} of {where} to be true or false, got {_clip(value)}")
    return value


def _clip(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- response


class InferResponseEncoder:
    """Encodes the outputs of one model's forward pass as inference responses.

    The JSON is spliced from pieces encoded once here (each output's name and datatype, the labels) and the
    numbers orjson formats in one call per tensor, byte for byte what ``orjson.dumps`` of the response
    object gives: building that object per request cost a one-row answer as much again.
    """

    def __init__(
        self, *, model_name: str, model_version: str, signature: Signature, class_labels: list[str] | None
    ) -> None:
        self.signature = signature
        head = orjson.dumps({"model_name": model_name, "model_version": model_version})
        self._head = head[:-1]  # '{"model_name":...,"model_version":...' : the id and outputs follow
        # Each output's '{"name":...,"datatype":...,"shape":[' ; its shape, data or size follow.
        self._entry = {
            t.name: orjson.dumps({"name": t.name, "datatype": t.datatype})[:-1] + b',"shape":['
            for t in signature.outputs
        }
        labels = class_labels or []
        self._label_json = [orjson.dumps(s) for s in labels]  # indexed by class
        # BYTES in binary: each element is its 4-byte little-endian length, then its bytes.
        self._label_bytes = [len(b).to_bytes(4, "little") + b for b in (s.encode() for s in labels)]

    def encode(
        self, request: InferRequest, out: np.ndarray, logits: np.ndarray | None = None
    ) -> tuple[bytes, Headers]:
        """Gives back the response body and its headers for ``request``'s outputs: ``out`` is the forward
        output (probabilities (B, K) or values (B, 1)), ``logits`` the raw outputs when they were asked for."""
        entries, chunks = [], []
        for requested in request.outputs:
            shape, data = self._tensor(requested.name, out, logits, binary=requested.binary)
            entry = self._entry[requested.name] + shape
            if requested.binary:
                entries.append(entry + b'],"parameters":{"binary_data_size":%d}}' % len(data))
                chunks.append(data)
            else:
                entries.append(entry + b'],"data":' + data + b"}")
        request_id = b',"id":' + orjson.dumps(request.id) if request.id is not None else b""
        header = b"".join([self._head, request_id, b',"outputs":[', b",".join(entries), b"]}"])
        if not chunks:
            return header, [(b"content-type", JSON_MEDIA_TYPE)]
        headers = [(b"content-type", BINARY_MEDIA_TYPE), (HEADER_LENGTH, b"%d" % len(header))]
        return b"".join([header, *chunks]), headers

    def _tensor(
        self, name: str, out: np.ndarray, logits: np.ndarray | None, *, binary: bool
    ) -> tuple[bytes, bytes]:
        """Gives back (the shape's JSON numbers, the data): a JSON array, or the raw bytes when binary."""
        small = len(out) <= SMALL_ROWS
        if name == LABEL:
            shape = b"%d" % len(out)
            if small:  # the first of equal maxima, as numpy's argmax and /predict's label
                best: Any = [row.index(max(row)) for row in out.tolist()]
            else:
                best = out.argmax(axis=1).tolist()
            if binary:
                return shape, b"".join([self._label_bytes[i] for i in best])
            return shape, b"[" + b",".join([self._label_json[i] for i in best]) + b"]"
        values = logits if name == LOGITS else out
        assert values is not None and name in (PROBABILITIES, LOGITS, VALUE)
        shape = b"%d,%d" % values.shape
        if binary:
            return shape, np.ascontiguousarray(values, dtype="<f4").tobytes()
        # Each float32 as its exact float64 value, which is what orjson writes for the Python floats of
        # tolist and for a float64 array alike: /predict's JSON numbers, byte for byte.
        if small:
            return shape, orjson.dumps(values.ravel().tolist())
        return shape, orjson.dumps(values.astype(np.float64).ravel(), option=orjson.OPT_SERIALIZE_NUMPY)


# ---------------------------------------------------------------------------------------------- metadata


def tensor_metadata(signature: Signature) -> dict[str, list[dict[str, Any]]]:
    """Gives back the model metadata's ``inputs`` and ``outputs`` (name, datatype, shape with -1 for the batch)."""

    def describe(specs: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

    return {"inputs": describe(signature.inputs), "outputs": describe(signature.outputs)}


# ---------------------------------------------------------------------------------------------- tables

_TABLE_DATATYPES = {
    "numeric": ("FP32", "FP64", *NUMERIC_DATATYPES),
    "boolean": ("BOOL",),
    "categorical": ("BYTES",),
}


def _table_rows(
    inputs: list[Any],
    binary: bytes,
    has_header: bool,
    header_bytes: int,
    feature_names: list[str],
    encoder: Encoder,
    max_rows: int,
) -> TableRows:
    """Gives back the encoded rows of a model with preprocessing: one tensor per feature, BYTES (UTF-8) for a
    categorical feature, BOOL (or 0/1 numbers) for a boolean one, numbers for a numeric one; JSON null (or a
    missing token, or NaN in binary data) is a missing value. A single ``input`` tensor [B, F] of numbers
    is taken when every feature is numeric or boolean."""
    names = [spec.get("name") if isinstance(spec, dict) else None for spec in inputs]
    if names == [INPUT]:
        if encoder.categorical:
            raise BadRequest(
                f"input {INPUT!r}: this model has categorical features, which an FP32 tensor cannot carry; "
                "expected one tensor per feature (BYTES for the categorical ones, as the model metadata lists)"
            )
        rows = _rows(
            _read_tensors(inputs, binary, has_header, header_bytes, True), feature_names, max_rows=max_rows
        )
        columns = {name: rows[:, j].astype(np.float64) for j, name in enumerate(feature_names)}
    else:
        kinds = dict(zip(feature_names, encoder.kinds, strict=True))
        columns, offset = {}, 0
        for i, spec in enumerate(inputs):
            name = names[i]
            if not isinstance(name, str):
                raise BadRequest(f"expected inputs[{i}] to be a tensor object with a string 'name'")
            if name not in kinds:
                raise BadRequest(
                    f"unknown input {name!r}: expected one tensor per feature named as in the model metadata "
                    f"({_clip(feature_names)})"
                )
            if name in columns:
                raise BadRequest(f"input {name!r} is given twice")
            datatype = spec.get("datatype")
            if datatype not in _TABLE_DATATYPES[kinds[name]]:
                raise BadRequest(
                    f"input {name!r}: a {kinds[name]} feature takes datatype "
                    f"{' or '.join(_TABLE_DATATYPES[kinds[name]][:2])}, got {_clip(datatype)}"
                )
            shape = _shape(name, spec.get("shape"))
            if len(shape) == 2 and shape[1] != 1:
                raise BadRequest(f"input {name!r}: expected shape [B] or [B, 1], got {shape}")
            params = _parameters(spec.get("parameters"), f"input {name!r}")
            _refuse_unsupported(params, f"input {name!r}")
            size = params.get("binary_data_size")
            if size is None:
                columns[name] = _json_column(name, spec.get("data"), datatype, shape[0])
            else:
                if not has_header:
                    raise BadRequest(
                        f"input {name!r} has binary_data_size but the request has no Inference-Header-Content-"
                        "Length header to say where its JSON ends"
                    )
                columns[name] = _binary_column(name, size, datatype, shape, binary, offset)
                offset += size
        if offset != len(binary):
            raise BadRequest(
                f"the inputs' binary_data_size add up to {offset} bytes, but {len(binary)} bytes follow the "
                f"{header_bytes}-byte JSON header"
            )
        _check_every_feature(list(columns), feature_names)
    batch = len(next(iter(columns.values())))
    if batch > max_rows:
        raise PayloadTooLarge(f"expected at most {max_rows} rows per request, got {batch}")
    try:
        return table_rows_from_columns(columns, feature_names, encoder)
    except Unprocessable as e:
        raise BadRequest(e.message) from None


def _check_every_feature(names: list[str], feature_names: list[str]) -> None:
    missing = [name for name in feature_names if name not in names]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BadRequest(
            f"missing input {missing[0]!r}{more}: one tensor per feature needs all {len(feature_names)} features"
        )


def _json_column(name: str, data: Any, datatype: str, batch: int) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: expected 'data' to be a list of {batch} values, got {_clip(data)}")
    values = list(_flatten(data))
    if len(values) != batch:
        raise BadRequest(f"input {name!r}: its shape holds {batch} values, but 'data' holds {len(values)}")
    if datatype in ("BYTES", "BOOL"):
        return np.array(values, dtype=object)  # each value is checked by the encoder, row and feature named
    return np.array([math.nan if v is None else v for v in values], dtype=object)


def _binary_column(
    name: str, size: Any, datatype: str, shape: list[int], binary: bytes, offset: int
) -> np.ndarray:
    if type(size) is not int or size < 0 or offset + size > len(binary):
        raise BadRequest(f"input {name!r}: binary_data_size {_clip(size)} does not fit the binary data sent")
    chunk = binary[offset : offset + size]
    if datatype == "BOOL":
        if size != shape[0]:
            raise BadRequest(
                f"input {name!r}: shape {shape} of BOOL is {shape[0]} bytes, binary_data_size says {size}"
            )
        return np.frombuffer(chunk, dtype=np.bool_)
    if datatype != "BYTES":
        return (
            _binary_values(name, size, datatype, shape, shape[0], binary, offset)
            .reshape(-1)
            .astype(np.float64)
        )
    out, at = [], 0  # BYTES: each element its 4-byte little-endian length, then its bytes
    while at < size:
        if at + 4 > size:
            raise BadRequest(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        n = int.from_bytes(chunk[at : at + 4], "little")
        if at + 4 + n > size:
            raise BadRequest(f"input {name!r}: a BYTES element of {n} bytes runs past binary_data_size")
        out.append(chunk[at + 4 : at + 4 + n])
        at += 4 + n
    if len(out) != shape[0]:
        raise BadRequest(
            f"input {name!r}: shape {shape} holds {shape[0]} values, but the BYTES data holds {len(out)}"
        )
    return np.array(out, dtype=object)
