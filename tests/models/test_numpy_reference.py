"""docs/ARTIFACT.md is enough to serve an artifact: its numpy reference code, run as it stands in the doc,
gives PyTorch's outputs, predictions and bn_fingerprint."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
import torch

from models import Manifest, load_artifact
from models.artifact import check_manifest_consistency
from models.preprocessing import Preprocessing, encoded_names
from tests.models.tiny_nets import KINDS, Trained

ARTIFACT_MD = Path(__file__).parents[2] / "docs" / "ARTIFACT.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", ARTIFACT_MD.read_text(), flags=re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def reference() -> SimpleNamespace:
    """The doc's reference implementation, executed as a module."""
    (code,) = code_blocks("python")
    namespace: dict[str, object] = {"__name__": "artifact_reference"}
    exec(compile(code, f"{ARTIFACT_MD}#reference-implementation", "exec"), namespace)
    return SimpleNamespace(**namespace)


def test_reference_implementation_needs_only_numpy_and_safetensors() -> None:
    (code,) = code_blocks("python")
    imported = set(re.findall(r"^(?:from|import) (\w+)", code, flags=re.MULTILINE))
    assert imported == {"hashlib", "json", "math", "sys", "pathlib", "numpy", "safetensors"}


@pytest.mark.parametrize("kind", KINDS)
def test_reference_outputs_match_torch_within_1e_5(
    kind: str, reference: SimpleNamespace, trained_nets: dict[str, Trained], exported: dict[str, Path]
) -> None:
    manifest, tensors = reference.load(exported[kind])
    rows = trained_nets[kind].rows
    with torch.inference_mode():
        expected = load_artifact(exported[kind]).model(rows).double()
    got = torch.from_numpy(reference.forward(manifest, tensors, rows.numpy()))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_reference_reproduces_the_canary_and_the_bn_fingerprint(
    kind: str, reference: SimpleNamespace, exported: dict[str, Path]
) -> None:
    manifest, tensors = reference.load(exported[kind])
    reference.check_canary(manifest, tensors)
    assert reference.bn_fingerprint(manifest, tensors) == manifest["bn_fingerprint"]


@pytest.mark.parametrize("kind", ["mlp_bn_before", "cnn"])
def test_reference_classifies_with_softmax_and_class_labels(
    kind: str, reference: SimpleNamespace, trained_nets: dict[str, Trained], exported: dict[str, Path]
) -> None:
    trained = trained_nets[kind]
    manifest, tensors = reference.load(exported[kind])
    labels, probabilities = reference.predict(
        manifest, reference.forward(manifest, tensors, trained.rows.numpy())
    )
    with torch.inference_mode():
        logits = trained.net(trained.rows)
    assert labels == [trained.class_labels[i] for i in logits.argmax(1).tolist()]
    torch.testing.assert_close(torch.from_numpy(probabilities), logits.softmax(1).double(), rtol=0, atol=1e-5)


def test_reference_regression_prediction_is_the_rescaled_output(
    reference: SimpleNamespace, trained_nets: dict[str, Trained], exported: dict[str, Path]
) -> None:
    trained = trained_nets["mlp_regression"]
    manifest, tensors = reference.load(exported["mlp_regression"])
    values, probabilities = reference.predict(
        manifest, reference.forward(manifest, tensors, trained.rows.numpy())
    )
    assert probabilities is None
    with torch.inference_mode():
        expected = trained.net(trained.rows)[:, 0].double()
    torch.testing.assert_close(torch.from_numpy(values), expected, rtol=0, atol=1e-5)


def test_reference_refuses_a_weights_file_changed_after_export(
    reference: SimpleNamespace, exported: dict[str, Path], tmp_path: Path
) -> None:
    artifact_dir = Path(shutil.copytree(exported["mlp_bn_before"], tmp_path / "mlp"))
    weights = artifact_dir / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x80
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights\.safetensors: SHA-256 differs from manifest\.json"):
        reference.load(artifact_dir)


def test_example_manifest_in_the_doc_is_a_valid_manifest() -> None:
    example, _ = code_blocks("json")
    manifest = Manifest.model_validate(orjson.loads(example))
    check_manifest_consistency(manifest, ARTIFACT_MD)
    assert manifest.canary.atol == 1e-5


def test_example_preprocessing_in_the_doc_is_valid_and_as_wide_as_the_doc_says() -> None:
    _, example = code_blocks("json")
    pre = Preprocessing.model_validate(orjson.loads(example))
    assert encoded_names(["age", "plan", "member"], pre) == [
        "age", "age:missing", "plan=basic", "plan=plus", "plan=pro", "plan=<other>", "plan=<missing>", "member",
    ]  # fmt: skip
