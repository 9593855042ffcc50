"""The named tensors a served artifact takes and gives: one definition for every protocol and export.

    signature(manifest).inputs    # [TensorSpec("input", "FP32", (-1, 30))]
    signature(manifest).outputs   # probabilities, label, logits (classifier) or value (regressor)

The Open Inference Protocol routes (service/), the ONNX graph and the Triton ``config.pbtxt`` (models/export/)
all read their names, datatypes and shapes from here, so a client written against one of them works with the
others. Datatypes are the protocol's names (``FP32``, ``BYTES``); ``-1`` is the batch dimension.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from models.manifest import Manifest

INPUT = "input"  # one FP32 tensor (B, F): rows in manifest feature order
PROBABILITIES = "probabilities"  # classifier: softmax of the logits (B, K), in class_labels order
LABEL = "label"  # classifier: the most probable class label per row (B,), BYTES
LOGITS = "logits"  # classifier: the network's raw outputs (B, K); returned only when asked for
VALUE = "value"  # regressor: the predicted value (B, 1), in target units


# With preprocessing, the datatype of each feature's tensor (numbers of other datatypes are converted too).
FEATURE_DATATYPES = {"numeric": "FP32", "boolean": "BOOL", "categorical": "BYTES"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # the Open Inference Protocol's datatype name
    shape: tuple[int, ...]  # -1 for the batch dimension
    default: bool = True  # part of the answer when a request names no outputs


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @functools.cached_property
    def default_outputs(self) -> tuple[str, ...]:
        """The outputs an answer holds when its request names none (read on every request: computed once)."""
        return tuple(t.name for t in self.outputs if t.default)


def signature(m: Manifest) -> Signature:
    """Gives back the tensors that an artifact with manifest ``m`` is served with."""
    if m.preprocessing is None:
        inputs: tuple[TensorSpec, ...] = (TensorSpec(INPUT, "FP32", (-1, len(m.feature_names))),)
    else:  # a table's raw rows: one tensor per feature, its values of the feature's kind
        inputs = tuple(
            TensorSpec(name, FEATURE_DATATYPES[f.kind], (-1,))
            for name, f in zip(m.feature_names, m.preprocessing.features, strict=True)
        )
    if m.task == "regression":
        return Signature(inputs, (TensorSpec(VALUE, "FP32", (-1, 1)),))
    k = m.num_outputs
    outputs = (
        TensorSpec(PROBABILITIES, "FP32", (-1, k)),
        TensorSpec(LABEL, "BYTES", (-1,)),
        TensorSpec(LOGITS, "FP32", (-1, k), default=False),
    )
    return Signature(inputs, outputs)
