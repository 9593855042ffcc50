"""The ONNX graph of an artifact's eval-mode network, checked with onnxruntime before it is handed out.

    exported = export_onnx(load_artifact("artifacts/breast_cancer"))   # verified, or ExportError
    Path("model.onnx").write_bytes(exported.model)

The graph takes ``input``, FP32 (B, F) raw rows in manifest feature order, and gives the outputs of
models/signature.py: ``probabilities`` (B, K), ``label`` (B,) strings and ``logits`` (B, K) for a classifier,
``value`` (B, 1) for a regressor. The input standardization is in the graph; each BN that follows a Linear or
Conv2d is folded into it (the same ``fold_batchnorm`` serving uses), any other stays an inference-mode
``BatchNormalization`` with the frozen statistics. The batch dimension is dynamic.

torch's exporter (``torch.onnx.export(..., dynamo=True)``) writes the network; the class labels are added after,
as a constant and a ``Gather`` (torch has no string tensors). onnx, onnxscript and onnxruntime come with the
``onnx`` extra (``pip install 'bnserve[onnx]'``); serving needs none of them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from torch import nn

from models import __version__
from models.artifact import Artifact
from models.bn import batchnorm_layers, fold_batchnorm
from models.errors import ExportError
from models.manifest import Canary
from models.signature import INPUT, LABEL, LOGITS, PROBABILITIES, VALUE, signature

DEFAULT_OPSET = 18  # onnxruntime 1.14 and later (Triton 23.04 and later) run it
INDEPENDENCE_FILLER_ROWS = 13  # other rows put beside the canaries to show they change nothing


@dataclass(frozen=True)
class OnnxExport:
    """A verified ONNX model and what its verification measured."""

    model: bytes  # the serialized ModelProto
    opset: int
    folded_bn: int  # BN layers folded into the preceding Linear/Conv
    unfolded_bn: int  # BN layers left as inference-mode BatchNormalization
    canary_max_abs_diff: float  # onnxruntime vs the outputs recorded in the manifest
    batch_max_abs_diff: float  # each canary row alone vs among other rows
    output_names: tuple[str, ...]


class _Served(nn.Module):
    """The network as served: outputs in models/signature.py order (the label is added to the graph later)."""

    def __init__(self, net: nn.Module, task: str) -> None:
        super().__init__()
        self.net = net
        self.task = task

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)  # (B, K) logits or (B, 1) values
        if self.task == "regression":
            return (out,)
        return torch.softmax(out, dim=1), out


def export_onnx(artifact: Artifact, *, fold: bool = True, opset: int = DEFAULT_OPSET) -> OnnxExport:
    """Gives back the ONNX model of ``artifact``'s network, verified with onnxruntime: the canary inputs give the
    canary outputs within the artifact's tolerance, and a row's outputs do not depend on the other rows.

    Raises ``ExportError`` when the exporter's packages are missing or the graph does not verify.
    """
    m = artifact.manifest
    if m.preprocessing is not None:
        raise ExportError(
            "this artifact takes raw table rows through its preprocessing (categories, missing values), which "
            "the ONNX graph does not carry; serve it with bnserve (/predict or the Open Inference Protocol)",
            path=artifact.path,
        )
    onnx = _require("onnx")
    _require("onnxscript")  # torch's dynamo exporter writes the graph through it
    net = fold_batchnorm(artifact.model) if fold else artifact.model
    bn_total = len(list(batchnorm_layers(artifact.model)))
    unfolded = len(list(batchnorm_layers(net)))
    served = _Served(net.cpu().eval(), m.task).eval()
    example = torch.tensor(m.canary.inputs, dtype=torch.float32).repeat(2, 1)  # >= 2 rows: a dynamic batch
    raw_outputs = [VALUE] if m.task == "regression" else [PROBABILITIES, LOGITS]
    with _quiet_exporter():
        try:
            program = torch.onnx.export(
                served,
                (example,),
                input_names=[INPUT],
                output_names=raw_outputs,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                dynamo=True,
                opset_version=opset,
                optimize=fold,  # onnxscript's optimizer folds BN into Gemm/Conv itself
                verify=False,
                external_data=False,
            )
        except Exception as e:  # the exporter raises many types; all mean "this network did not export"
            raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}", path=artifact.path) from e
    assert program is not None
    proto = program.model_proto
    if m.task == "classification":
        assert m.class_labels is not None
        _add_label_output(proto, m.class_labels)
    _describe(proto, artifact, folded=bn_total - unfolded)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"the exported graph fails onnx.checker: {e}", path=artifact.path) from e
    model = proto.SerializeToString()
    canary_diff, batch_diff = verify_onnx(model, artifact)
    return OnnxExport(
        model=model,
        opset=opset,
        folded_bn=bn_total - unfolded,
        unfolded_bn=unfolded,
        canary_max_abs_diff=canary_diff,
        batch_max_abs_diff=batch_diff,
        output_names=tuple(o.name for o in proto.graph.output),
    )


def verify_onnx(model: bytes, artifact: Artifact) -> tuple[float, float]:
    """Gives back (canary difference, batch difference) after checking ``model`` with onnxruntime; raises
    ``ExportError`` naming what disagrees.

    Checked: the outputs are those of models/signature.py; each canary row gives bit-identical outputs whatever
    other rows share its batch, and the same outputs alone as in a batch, within the canary tolerance
    (``canary.atol``/``rtol``); the canary inputs reproduce the canary outputs within that tolerance; the
    probabilities are the softmax of the logits and the label their arg max.
    """
    session = _session(model)
    m = artifact.manifest
    spec = signature(m)
    got_names = [o.name for o in session.get_outputs()]
    if got_names != spec.output_names:
        raise ExportError(f"the graph's outputs are {got_names}, expected {spec.output_names}")
    canary_in = np.asarray(m.canary.inputs, dtype=np.float32)
    expected = np.asarray(m.canary.outputs, dtype=np.float32)
    tol = m.canary
    batch_diff = _check_row_independence(session, canary_in, artifact, tol)  # first: it names the cause
    outputs = _run(session, canary_in)
    raw = outputs[VALUE if m.task == "regression" else LOGITS]
    canary_diff = float(np.abs(raw - expected).max())
    if raw.shape != expected.shape or not np.allclose(raw, expected, atol=tol.atol, rtol=tol.rtol):
        raise ExportError(
            f"onnxruntime gives canary outputs of shape {list(raw.shape)} differing by up to {canary_diff:.3g} "
            f"from the {list(expected.shape)} recorded at export (atol {m.canary.atol}, rtol {m.canary.rtol})",
            path=artifact.path,
        )
    if m.task == "classification":
        _check_classifier_outputs(outputs, m.class_labels or [], tol)
    return canary_diff, batch_diff


def _check_classifier_outputs(outputs: dict[str, np.ndarray], labels: list[str], tol: Canary) -> None:
    logits = outputs[LOGITS].astype(np.float64)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    if not np.allclose(outputs[PROBABILITIES], softmax, atol=tol.atol, rtol=tol.rtol):
        raise ExportError("the graph's probabilities are not the softmax of its logits")
    expected = [labels[i] for i in outputs[PROBABILITIES].argmax(axis=1)]
    got = [_text(v) for v in outputs[LABEL]]
    if got != expected:
        raise ExportError(f"the graph's labels {got} are not the arg max of its probabilities {expected}")


def _check_row_independence(session: Any, canary_in: np.ndarray, artifact: Artifact, tol: Canary) -> float:
    """Gives back the largest difference between a canary row's outputs alone and among other rows."""
    n = len(canary_in)
    fillers = [_rows_like_training(artifact, INDEPENDENCE_FILLER_ROWS, seed) for seed in (1, 2)]
    batches = [_run(session, np.concatenate([canary_in, f])) for f in fillers]
    alone = [_run(session, canary_in[i : i + 1]) for i in range(n)]
    worst = 0.0
    for name in batches[0]:
        first, second = batches[0][name][:n], batches[1][name][:n]
        if not np.array_equal(first, second):
            raise ExportError(
                f"output {name!r} of the canary rows changed when the other rows of their batch changed: "
                "the graph mixes rows (a BatchNormalization in training mode?)",
                path=artifact.path,
            )
        single = np.concatenate([a[name] for a in alone])
        if first.dtype.kind in "OUS":  # labels: equal or not
            if [_text(v) for v in single] != [_text(v) for v in first]:
                raise ExportError(f"output {name!r} differs between a row alone and in a batch")
            continue
        worst = max(worst, float(np.abs(single - first).max()))
        if not np.allclose(single, first, atol=tol.atol, rtol=tol.rtol):
            raise ExportError(
                f"output {name!r} of a row alone differs by up to {worst:.3g} from the same row in a batch of "
                f"{len(canary_in) + INDEPENDENCE_FILLER_ROWS} (atol {tol.atol}, rtol {tol.rtol})",
                path=artifact.path,
            )
    return worst


def _rows_like_training(artifact: Artifact, count: int, seed: int) -> np.ndarray:
    """Gives back ``count`` rows spread like the training data: mean ± 3 std per feature."""
    std = artifact.manifest.input_standardization
    z = np.random.default_rng(seed).uniform(-3, 3, size=(count, len(std.mean)))
    return (np.asarray(std.mean) + z * np.asarray(std.std)).astype(np.float32)


def _add_label_output(proto: Any, class_labels: list[str]) -> None:
    """Appends ``label`` (B,) strings to the graph: the class label at the arg max of ``probabilities``."""
    from onnx import TensorProto, helper

    graph = proto.graph
    labels = helper.make_tensor(
        "class_labels",
        TensorProto.STRING,
        [len(class_labels)],
        [s.encode() for s in class_labels],  # type: ignore[misc]
    )
    graph.initializer.append(labels)
    graph.node.extend(
        [
            # ArgMax keeps the first of equal maxima, as numpy's argmax does on the service side.
            helper.make_node("ArgMax", [PROBABILITIES], ["label_index"], axis=1, keepdims=0),
            helper.make_node("Gather", ["class_labels", "label_index"], [LABEL], axis=0),
        ]
    )
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_param or "batch"
    label = helper.make_tensor_value_info(LABEL, TensorProto.STRING, [batch])
    logits = graph.output.pop()  # probabilities, logits -> probabilities, label, logits (models/signature.py)
    graph.output.extend([label, logits])


def _describe(proto: Any, artifact: Artifact, *, folded: int) -> None:
    """Records where the graph came from in its metadata (Netron and onnxruntime show it)."""
    m = artifact.manifest
    proto.producer_name, proto.producer_version = "bnserve", __version__
    proto.doc_string = f"bnserve artifact {m.name!r} ({m.task}); eval mode, frozen BN statistics"
    props = {
        "bnserve.model": m.name,
        "bnserve.task": m.task,
        "bnserve.artifact_sha256": artifact.weights_sha256,
        "bnserve.bn_fingerprint": artifact.bn_fingerprint,
        "bnserve.bn_folded": str(folded),
        "bnserve.feature_names": orjson.dumps(m.feature_names).decode(),
        "bnserve.class_labels": orjson.dumps(m.class_labels).decode(),
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _session(model: bytes) -> Any:
    ort = _require("onnxruntime")
    try:
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported graph: {e}") from e


def _run(session: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT: rows}), strict=True))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _require(package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ExportError(
            f"the ONNX export needs the {package!r} package: pip install 'bnserve[onnx]'"
        ) from None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keeps the exporter's progress lines and its warnings (about torchvision operators it skips, about
    deprecations inside torch) off the console: they are about torch, not about the user's model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
