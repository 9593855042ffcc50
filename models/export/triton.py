"""A Triton Inference Server model repository around an exported ONNX graph.

    write_triton_repository("model_repository", artifact, exported.model)
    # model_repository/<name>/config.pbtxt and model_repository/<name>/1/model.onnx

``tritonserver --model-repository model_repository`` then serves the model under the artifact's name with the
onnxruntime backend, dynamic batching on, and the tensor names of models/signature.py: a client written for
bnserve's Open Inference Protocol routes works against Triton unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from models import __version__
from models.artifact import Artifact
from models.atomic import write_dir_atomically
from models.errors import ExportError
from models.signature import TensorSpec, signature

DEFAULT_MAX_BATCH_SIZE = 4096  # bnserve's own default BNSERVE_MAX_ROWS
DEFAULT_MAX_QUEUE_DELAY_US = 100
_TRITON_TYPES = {"FP32": "TYPE_FP32", "BYTES": "TYPE_STRING"}


def triton_config(
    artifact: Artifact,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
) -> str:
    """Gives back the ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``) for ``artifact``.

    Triton's dims leave out the batch dimension that ``max_batch_size > 0`` adds; the per-row ``label``
    (shape ``[B]`` in the graph) is declared ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }``, Triton's way of
    saying that a batched tensor has no dimension of its own.
    """
    if max_batch_size < 1:
        raise ExportError(f"max_batch_size must be at least 1, got {max_batch_size}")
    m = artifact.manifest
    sig = signature(m)
    lines = [
        f"# Written by bnserve {__version__} from artifact {m.name!r}, weights SHA-256 {artifact.weights_sha256}.",
        f"name: {json.dumps(m.name)}",  # JSON's string escapes are valid protobuf text format
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        ",\n".join(_tensor(t) for t in sig.inputs),
        "]",
        "output [",
        ",\n".join(_tensor(t) for t in sig.outputs),
        "]",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def write_triton_repository(
    repo_dir: str | Path,
    artifact: Artifact,
    onnx_model: bytes,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
) -> Path:
    """Gives back ``repo_dir/<name>``, written atomically: ``config.pbtxt`` and version ``1/model.onnx``.

    Other models already in ``repo_dir`` are left alone; an older export of the same model is replaced whole.
    """
    name = artifact.manifest.name
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"the model name {name!r} cannot be a Triton model directory", path=artifact.path)
    config = triton_config(artifact, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us)
    model_dir = Path(repo_dir) / name
    write_dir_atomically(model_dir, {"config.pbtxt": config.encode(), "1/model.onnx": onnx_model})
    return model_dir


def _tensor(t: TensorSpec) -> str:
    per_row = list(t.shape[1:])  # without the batch dimension
    dims = per_row or [1]
    body = [
        f"    name: {json.dumps(t.name)}",
        f"    data_type: {_TRITON_TYPES[t.datatype]}",
        f"    dims: {dims}",
    ]
    if not per_row:
        body.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(body) + "\n  }"
