"""The answers every benchmarked service must give: the unbatched, unfolded network's, within 1e-6.

reference = Reference.from_artifact(load_artifact(path), rows)
problem = check_answer(orjson.loads(body), reference.expected[i : i + 1], reference.class_labels)
assert problem is None, problem
problem = check_oip_answer(decoded_oip_body, reference.expected[i : i + 1], reference.class_labels)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models import Artifact
from models.lean import LeanArtifact

TOLERANCE = 1e-6


@dataclass
class Reference:
    """A pool of input rows and, for each, the output of the unfolded network run on that row alone."""

    rows: np.ndarray  # (N, F) float32
    expected: np.ndarray  # (N, K) float32: probabilities in class-label order, or (N, 1) values
    class_labels: list[str] | None

    @classmethod
    def from_artifact(cls, artifact: Artifact, rows: np.ndarray) -> Reference:
        model = artifact.model  # the network as exported: BN unfolded, eval mode
        classification = artifact.manifest.task == "classification"
        outputs = []
        with torch.inference_mode():
            for row in torch.from_numpy(rows).split(1):  # one row per forward: nothing batched
                out = model(row)
                outputs.append(torch.softmax(out, dim=1) if classification else out)
        return cls(rows, torch.cat(outputs).numpy(), artifact.manifest.class_labels)


def sample_rows(artifact: Artifact | LeanArtifact, n: int, *, seed: int = 0) -> np.ndarray:
    """Gives back ``n`` distinct float32 rows spread like the training data (mean ± 2 std per feature)."""
    std = artifact.manifest.input_standardization
    rng = np.random.default_rng(seed)
    z = rng.uniform(-2, 2, size=(n, len(std.mean)))
    rows = np.asarray(std.mean) + z * np.asarray(std.std)
    # Rounded like a client would write them, so the JSON sent parses back to exactly these float32 values.
    return np.array([[float(f"{v:.6g}") for v in row] for row in rows], dtype=np.float32)


def request_body(rows: np.ndarray) -> bytes:
    """Gives back the /predict body for ``rows``, numbers written so they parse back to the same float32."""
    return (
        '{"instances": [' + ", ".join("[" + ", ".join(f"{v:.9g}" for v in row) + "]" for row in rows) + "]}"
    ).encode()


def check_answer(answer: Any, expected: np.ndarray, class_labels: list[str] | None) -> str | None:
    """Gives back None when ``answer`` (a decoded /predict body: JSON, or the bulk answer's float32 array)
    matches ``expected`` (B, K), else what differs."""
    if isinstance(answer, np.ndarray):
        if answer.shape != expected.shape:
            return f"expected a bulk answer of shape {expected.shape}, got {answer.shape}"
        diff = np.abs(answer.astype(np.float64) - expected)
        if not diff.max() <= TOLERANCE:  # NaN fails too
            i = int(np.nanargmax(diff.max(axis=1))) if not np.isnan(diff).all() else 0
            return f"row {i}: expected {expected[i].tolist()}, got {answer[i].tolist()} (bulk answer)"
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        return f"expected an object with a 'predictions' list, got {str(answer)[:120]!r}"
    predictions = answer["predictions"]
    if len(predictions) != len(expected):
        return f"expected {len(expected)} predictions, got {len(predictions)}"
    for i, (pred, want) in enumerate(zip(predictions, expected, strict=True)):
        try:
            if class_labels is None:
                got = np.array([pred["value"]], dtype=np.float64)
            else:
                got = np.array([pred["probabilities"][label] for label in class_labels], dtype=np.float64)
                label = class_labels[int(np.argmax(want))]
                # A tie within the tolerance may go either way; otherwise the label must be the argmax.
                if pred["label"] != label and np.sort(want)[-1] - np.sort(want)[-2] > TOLERANCE:
                    return f"row {i}: expected label {label!r}, got {pred['label']!r}"
        except (KeyError, TypeError) as e:
            return f"row {i}: malformed prediction {str(pred)[:120]!r} ({type(e).__name__}: {e})"
        diff = float(np.max(np.abs(got - want)))
        if not diff <= TOLERANCE:
            return f"row {i}: expected {want.tolist()}, got {got.tolist()} (max abs diff {diff:.3g} > {TOLERANCE})"
    return None


def oip_json_body(rows: np.ndarray) -> bytes:
    """Gives back an Open Inference Protocol request for ``rows`` with JSON data (numbers as in
    ``request_body``), asking for the default outputs."""
    data = ", ".join(f"{v:.9g}" for v in rows.ravel())
    return (
        f'{{"inputs": [{{"name": "input", "shape": [{rows.shape[0]}, {rows.shape[1]}], "datatype": "FP32", '
        f'"data": [{data}]}}]}}'
    ).encode()


def oip_binary_body(rows: np.ndarray, outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    """Gives back an Open Inference Protocol request for ``rows`` as a binary tensor, asking for ``outputs``
    as binary tensors, and the header it needs (``Inference-Header-Content-Length``)."""
    header = (
        f'{{"inputs": [{{"name": "input", "shape": [{rows.shape[0]}, {rows.shape[1]}], "datatype": "FP32", '
        f'"parameters": {{"binary_data_size": {rows.nbytes}}}}}], "outputs": ['
        + ", ".join(f'{{"name": "{name}", "parameters": {{"binary_data": true}}}}' for name in outputs)
        + "]}"
    ).encode()
    return header + rows.astype("<f4").tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def check_oip_answer(answer: Any, expected: np.ndarray, class_labels: list[str] | None) -> str | None:
    """Gives back None when ``answer`` (a decoded inference response, binary outputs' ``data`` filled in) holds
    ``probabilities`` (and ``label``, if any) or ``value`` matching ``expected`` (B, K), else what differs."""
    if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
        return f"expected an inference response with 'outputs', got {str(answer)[:120]!r}"
    outputs = {o.get("name"): o for o in answer["outputs"] if isinstance(o, dict)}
    name = "value" if class_labels is None else "probabilities"
    if name not in outputs:
        return f"expected output {name!r}, got {sorted(map(str, outputs))}"
    got = np.asarray(outputs[name].get("data"), dtype=np.float64)
    if got.size != expected.size or list(outputs[name].get("shape", [])) != list(expected.shape):
        return f"expected {name} of shape {list(expected.shape)}, got {outputs[name].get('shape')} ({got.size} values)"
    diff = np.abs(got.reshape(expected.shape) - expected)
    if not diff.max() <= TOLERANCE:  # NaN fails too
        i = int(np.nanargmax(diff.max(axis=1))) if not np.isnan(diff).all() else 0
        return f"row {i}: expected {expected[i].tolist()}, got {got.reshape(expected.shape)[i].tolist()} ({name})"
    if class_labels is not None and "label" in outputs:
        labels = list(outputs["label"].get("data", []))
        for i, want in enumerate(expected):
            label = class_labels[int(np.argmax(want))]
            if i >= len(labels) or (labels[i] != label and np.sort(want)[-1] - np.sort(want)[-2] > TOLERANCE):
                return f"row {i}: expected label {label!r}, got {labels[i] if i < len(labels) else 'none'!r}"
    return None


def print_checked(problems: list[str], checked: int, *, what: str = "checked answers") -> None:
    """Prints the wrong or failed answers of a run (the first 20), or that all ``checked`` matched."""
    if problems:
        print(f"\nWRONG OR FAILED ANSWERS ({len(problems)}):")
        for p in problems[:20]:
            print(f"  {p}")
    else:
        print(f"answers: all {checked:,} {what} match the unfolded network within 1e-6")
