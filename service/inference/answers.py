"""The /predict answer: one prediction per row, as a dict or straight as JSON bytes.

encoder = AnswerEncoder(model="breast_cancer", artifact_sha256="e2af...", class_labels=["malignant", "benign"])
encoder.answer(out)    # {"model": ..., "version": "1", "artifact_sha256": ..., "predictions": [{"label": ..., "probabilities": {...}}]}
encoder.encode(out)    # the same answer as JSON, byte for byte ``orjson.dumps(encoder.answer(out))``
encoder.encode_float32(out)  # the bulk answer: raw little-endian float32 (B, K), and the headers that describe it

``out`` is a batch's output: class probabilities (B, K) or regression values (B, 1).

Why ``encode`` does not just call ``orjson.dumps(answer)``: building a dict per row (and one of
probabilities inside it) costs as much in Python as the whole forward pass of a large batch. ``encode`` lets orjson format every number of the batch in one call, then splices the
numbers into a per-row template of the constant keys and labels (themselves JSON-encoded by orjson) at C
speed (``bytes.__mod__`` over ``zip``): several times faster for large batches. Small batches take the dict
path, which is faster below a few rows (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

DICT_PATH_ROWS = 2  # at most this many rows: orjson.dumps of the dict is faster than the splicing
FLOAT32_MEDIA_TYPE = "application/octet-stream"

Headers = list[tuple[bytes, bytes]]


class AnswerEncoder:
    def __init__(
        self, *, model: str, artifact_sha256: str, class_labels: list[str] | None, version: str = "1"
    ) -> None:
        self.model = model
        self.version = version
        self.artifact_sha256 = artifact_sha256
        self.class_labels = class_labels
        head = orjson.dumps({"model": model, "version": version, "artifact_sha256": artifact_sha256})
        self._head = head[:-1] + b',"predictions":['  # '{"model":...,"version":...,"predictions":['
        self._labels: np.ndarray | None = None  # each label's JSON, indexed by class
        if class_labels is None:
            self._row = b'{"value":%s}'
        else:
            keys = [orjson.dumps(label).replace(b"%", b"%%") for label in class_labels]
            probabilities = b",".join(key + b":%s" for key in keys)
            self._row = b'{"label":%s,"probabilities":{' + probabilities + b"}}"
            self._labels = np.array([orjson.dumps(label) for label in class_labels], dtype=object)
        # The bulk answer's columns, as a JSON list in ASCII (json.dumps escapes the rest): header values
        # are Latin-1, and labels may hold commas or any Unicode.
        columns = json.dumps(class_labels if class_labels is not None else ["value"], separators=(",", ":"))
        self._float32_headers: Headers = [
            (b"content-type", FLOAT32_MEDIA_TYPE.encode()),
            (b"x-bnserve-columns", columns.encode("ascii")),
            (b"x-bnserve-artifact-sha256", artifact_sha256.encode("ascii")),
            (b"x-bnserve-model", model.encode("ascii")),
            (b"x-bnserve-version", version.encode("ascii")),
        ]

    def answer(self, out: np.ndarray) -> dict[str, Any]:
        """Gives back the answer as a dict."""
        return {
            "model": self.model,
            "version": self.version,
            "artifact_sha256": self.artifact_sha256,
            "predictions": self._rows(out),
        }

    def encode(self, out: np.ndarray) -> bytes:
        """Gives back the answer's JSON."""
        if len(out) == 1:
            return self._one_row(out)
        if len(out) <= DICT_PATH_ROWS:
            return orjson.dumps(self.answer(out))
        # orjson writes a float64 array's numbers exactly as it writes the same Python floats.
        numbers = orjson.dumps(out.astype(np.float64).ravel(), option=orjson.OPT_SERIALIZE_NUMPY)
        cells = numbers[1:-1].split(b",")  # B * K numbers, row-major
        k = out.shape[1]
        columns = [cells[j::k] for j in range(k)]
        if self._labels is None:
            rows = map(self._row.__mod__, zip(*columns, strict=True))
        else:
            best = self._labels[out.argmax(axis=1)]
            rows = map(self._row.__mod__, zip(best, *columns, strict=True))
        return self._head + b",".join(rows) + b"]}"

    def encode_float32(self, out: np.ndarray) -> tuple[bytes, Headers]:
        """Gives back the bulk answer: ``out`` as raw little-endian float32, row-major (B, K), with no
        header, and the HTTP headers that describe it (content-type, ``x-bnserve-shape: B,K``, the
        columns as a JSON list: class labels or ``["value"]``, the artifact's SHA-256, the model and version)."""
        rows, k = out.shape
        shape = (b"x-bnserve-shape", b"%d,%d" % (rows, k))
        return np.ascontiguousarray(out, dtype="<f4").tobytes(), [*self._float32_headers, shape]

    def _one_row(self, out: np.ndarray) -> bytes:
        """The answer of a single row, spliced into the row's template as ``encode`` splices many: a third of
        the dict path's cost, which builds two dicts and asks numpy for the argmax."""
        values = out.tolist()[0]  # Python floats, formatted by orjson exactly as in the dict
        cells = orjson.dumps(values)[1:-1].split(b",")
        if self._labels is None:
            return self._head + self._row % (cells[0],) + b"]}"
        total = sum(values)
        # The first highest, as numpy's argmax picks it; with a NaN (which propagates into the sum) numpy's
        # own, for which a NaN is the highest.
        best = values.index(max(values)) if total == total else int(np.argmax(out[0]))
        return self._head + self._row % (self._labels[best], *cells) + b"]}"

    def _rows(self, out: np.ndarray) -> list[dict[str, Any]]:
        labels = self.class_labels
        if labels is None:
            return [{"value": v} for v in out[:, 0].tolist()]
        best = [labels[k] for k in out.argmax(axis=1).tolist()]
        return [
            {"label": b, "probabilities": dict(zip(labels, p, strict=True))}
            for b, p in zip(best, out.tolist(), strict=True)
        ]
