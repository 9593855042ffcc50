"""A damaged or edited artifact is refused with its own typed error, naming the problem and the file.

Tensor edits are tried twice: alone (the weights checksum no longer matches, yet the error still says what
changed) and with the checksums in manifest.json and manifest.sha256 updated to match, so the specific check
itself has to catch it.

Every test runs with both loaders, ``load_artifact`` (torch) and ``load_lean_artifact`` (numpy, no torch):
they refuse the same artifacts with the same errors.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from safetensors.torch import load_file, save_file

from models import load_artifact, load_lean_artifact
from models.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    CanaryMismatchError,
    ChecksumError,
    ManifestError,
    NonFiniteError,
    TensorMismatchError,
    UnsupportedFormatError,
)

Tensors = dict[str, torch.Tensor]
ManifestDict = dict[str, Any]
LOADERS: dict[str, Callable[[Path], Any]] = {"torch": load_artifact, "lean": load_lean_artifact}
_loader: list[Callable[[Path], Any]] = [load_artifact]  # the loader of the running test


@pytest.fixture(params=sorted(LOADERS), autouse=True)
def loader(request: pytest.FixtureRequest) -> Callable[[Path], Any]:
    _loader[0] = LOADERS[request.param]
    return _loader[0]


# ------------------------------------------------------------------------------------------ tampering


def edit_weights(artifact_dir: Path, edit: Callable[[Tensors], None]) -> None:
    path = artifact_dir / "weights.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def edit_manifest(artifact_dir: Path, edit: Callable[[ManifestDict], None]) -> None:
    """Rewrites manifest.json after ``edit``, leaving manifest.sha256 as exported."""
    path = artifact_dir / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    edit(manifest)
    path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def reseal(artifact_dir: Path) -> None:
    """Updates both checksums to the files as they are now, as a careful forger would."""
    weights_sha = hashlib.sha256((artifact_dir / "weights.safetensors").read_bytes()).hexdigest()
    edit_manifest(artifact_dir, lambda m: m["weights"].update(sha256=weights_sha))
    manifest_sha = hashlib.sha256((artifact_dir / "manifest.json").read_bytes()).hexdigest()
    (artifact_dir / "manifest.sha256").write_text(f"{manifest_sha}  manifest.json\n")


def flip_sign_byte(artifact_dir: Path, key: str) -> None:
    """Flips the sign bit of the first float32 of tensor ``key``, in place in weights.safetensors."""
    path = artifact_dir / "weights.safetensors"
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    start, _ = orjson.loads(data[8 : 8 + header_len])[key]["data_offsets"]
    data[8 + header_len + start + 3] ^= 0x80  # little-endian: byte 3 holds the sign
    path.write_bytes(bytes(data))


def layer(manifest: ManifestDict, name: str) -> dict[str, Any]:
    return next(spec for spec in manifest["layers"] if spec["name"] == name)


def refusal(artifact_dir: Path, error: type[ArtifactError], pattern: str) -> ArtifactError:
    """Gives back the error ``load_artifact`` raised, after checking its type and message."""
    with pytest.raises(error, match=pattern) as caught:
        _loader[0](artifact_dir)
    assert type(caught.value) is error, f"expected exactly {error.__name__}, got {caught.type.__name__}"
    return caught.value


# ------------------------------------------------------------------------------------------ weights file


def test_weights_file_with_one_flipped_byte_is_refused_as_corrupted(artifact_dir: Path) -> None:
    flip_sign_byte(artifact_dir, "head.bias")
    error = refusal(
        artifact_dir,
        ChecksumError,
        r"weights\.safetensors: its SHA-256 is [0-9a-f]{64} but manifest\.json records [0-9a-f]{64}: "
        r"the file is corrupted",
    )
    assert error.path == artifact_dir / "weights.safetensors"


def test_weights_file_cut_short_is_refused_as_unreadable(artifact_dir: Path) -> None:
    path = artifact_dir / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    refusal(artifact_dir, ChecksumError, r"weights\.safetensors: its SHA-256 .* not readable safetensors")


def test_flipped_weight_behind_updated_checksums_is_caught_by_the_canary(artifact_dir: Path) -> None:
    flip_sign_byte(artifact_dir, "head.bias")
    reseal(artifact_dir)
    error = refusal(
        artifact_dir,
        CanaryMismatchError,
        r"network rebuilt from manifest\.json and weights\.safetensors gives canary outputs .* differing by up to",
    )
    assert error.path == artifact_dir


def test_flipped_bn_statistic_behind_updated_checksums_is_caught_by_the_bn_fingerprint(
    artifact_dir: Path,
) -> None:
    flip_sign_byte(artifact_dir, "bn2.running_mean")
    reseal(artifact_dir)
    refusal(
        artifact_dir,
        ChecksumError,
        r"manifest\.json: bn_fingerprint is [0-9a-f]{64} but the BN buffers in weights\.safetensors hash to",
    )


def _drop(key: str) -> Callable[[Tensors], None]:
    return lambda t: t.pop(key)


def _add(key: str, value: torch.Tensor) -> Callable[[Tensors], None]:
    return lambda t: t.update({key: value})


def _set_nan(key: str, index: int) -> Callable[[Tensors], None]:
    return lambda t: t[key].__setitem__(index, float("nan"))


TENSOR_EDITS = [
    pytest.param(
        _drop("bn1.running_var"),
        TensorMismatchError,
        r"missing tensor 'bn1\.running_var' \(float32 \[16\]\) that the architecture in manifest\.json needs",
        id="missing-tensor",
    ),
    pytest.param(
        _add("bn1.running_std", torch.ones(16)),
        TensorMismatchError,
        r"unexpected tensor 'bn1\.running_std' \(float32 \[16\]\) that no layer in manifest\.json declares",
        id="extra-tensor",
    ),
    pytest.param(
        _add("fc2.weight", torch.zeros(8, 15)),
        TensorMismatchError,
        r"tensor 'fc2\.weight' is float32 \[8, 15\] but the architecture in manifest\.json needs float32 \[8, 16\]",
        id="wrong-shape",
    ),
    pytest.param(
        _add("fc1.weight", torch.zeros(16, 5, dtype=torch.float64)),
        TensorMismatchError,
        r"tensor 'fc1\.weight' is float64 \[16, 5\] but the architecture in manifest\.json needs float32 \[16, 5\]",
        id="wrong-dtype",
    ),
    pytest.param(
        _set_nan("bn2.running_var", 3),
        NonFiniteError,
        r"tensor 'bn2\.running_var' holds 1 NaN or inf value\(s\)",
        id="nan-in-bn-buffer",
    ),
    pytest.param(
        _add("input_norm.std", torch.tensor([1.0, float("inf"), 1.0, 1.0, 1.0])),
        NonFiniteError,
        r"tensor 'input_norm\.std' holds 1 NaN or inf value\(s\)",
        id="inf-in-standardization",
    ),
]
CHECKSUMS = pytest.mark.parametrize(
    "checksums_updated", [False, True], ids=["tampered-only", "checksums-updated"]
)


@CHECKSUMS
@pytest.mark.parametrize(("edit", "error", "pattern"), TENSOR_EDITS)
def test_edited_tensor_is_refused_with_what_changed_in_weights_file(
    artifact_dir: Path,
    edit: Callable[[Tensors], None],
    error: type[ArtifactError],
    pattern: str,
    checksums_updated: bool,
) -> None:
    edit_weights(artifact_dir, edit)
    if checksums_updated:
        reseal(artifact_dir)
    caught = refusal(artifact_dir, error, rf"^{artifact_dir}/weights\.safetensors: {pattern}")
    checksum_note = r"\(also, its SHA-256 is [0-9a-f]{64} but manifest\.json records [0-9a-f]{64}\)"
    # Where the checksum also fails, the message says so, so nobody mistakes an edit for a clean file.
    assert bool(re.search(checksum_note, str(caught))) is not checksums_updated


# ------------------------------------------------------------------------------------------ manifest


def _set_eps_everywhere(m: ManifestDict) -> None:
    layer(m, "bn1")["eps"] = 0.5
    if "batchnorm" in m:  # format 1 repeats it
        m["batchnorm"][0]["eps"] = 0.5


def _remove_layer(name: str) -> Callable[[ManifestDict], None]:
    def edit(m: ManifestDict) -> None:
        m["layers"].remove(layer(m, name))
        if "batchnorm" in m:
            m["batchnorm"] = [b for b in m["batchnorm"] if b["name"] != name]

    return edit


def _add_a_feature_everywhere(m: ManifestDict) -> None:
    m["feature_names"].append("x5")
    m["input_shape"] = [6]
    layer(m, "input_norm")["num_features"] = 6
    layer(m, "fc1")["in_features"] = 6
    m["input_standardization"]["mean"].append(0.0)
    m["input_standardization"]["std"].append(1.0)
    for row in m["canary"]["inputs"]:
        row.append(0.0)


MANIFEST_EDITS = [
    pytest.param(
        _set_eps_everywhere,
        CanaryMismatchError,
        r"network rebuilt from manifest\.json and weights\.safetensors gives canary outputs",
        id="another-eps",
    ),
    pytest.param(
        lambda m: layer(m, "bn1").update(eps=0.5),
        CanaryMismatchError,
        r"network rebuilt from manifest\.json and weights\.safetensors gives canary outputs",
        id="another-eps",
    ),
    pytest.param(
        _remove_layer("act1"),
        CanaryMismatchError,
        r"network rebuilt from manifest\.json and weights\.safetensors gives canary outputs",
        id="missing-activation-layer",
    ),
    pytest.param(
        _remove_layer("bn2"),
        TensorMismatchError,
        r"weights\.safetensors: unexpected tensor 'bn2\.bias' \(float32 \[8\]\) that no layer in manifest\.json declares",
        id="missing-bn-layer",
    ),
    pytest.param(
        lambda m: m["feature_names"].append("x5"),
        ManifestError,
        r"manifest\.json: feature count disagrees: 6 feature_names, input_shape \[5\], "
        r"layer 'input_norm' expects 5 features",
        id="another-feature-count",
    ),
    pytest.param(
        _add_a_feature_everywhere,
        TensorMismatchError,
        r"weights\.safetensors: tensor 'fc1\.weight' is float32 \[16, 5\] "
        r"but the architecture in manifest\.json needs float32 \[16, 6\]",
        id="another-feature-count-everywhere",
    ),
    pytest.param(
        lambda m: layer(m, "act2").update(name="act1"),
        ManifestError,
        r"manifest\.json: layer names must be unique, repeated: \['act1'\]",
        id="repeated-layer-name",
    ),
    pytest.param(
        lambda m: layer(m, "head").update(out_features=4),
        ManifestError,
        r"manifest\.json: the last Linear layer must have 3 outputs for task 'classification', got 4",
        id="head-wider-than-class-labels",
    ),
    pytest.param(
        lambda m: m.update(format_version=3),
        UnsupportedFormatError,
        r"manifest\.json: format_version 3 is not supported: this bnserve \S+ reads format_version 1 or 2",
        id="unknown-format-version",
    ),
    pytest.param(
        lambda m: m.pop("format_version"),
        UnsupportedFormatError,
        r"manifest\.json: format_version None is not supported",
        id="no-format-version",
    ),
    pytest.param(
        lambda m: layer(m, "act1").update(type="Swish"),
        ManifestError,
        r"manifest\.json: does not match the manifest schema: layers\.3: Input tag 'Swish'",
        id="unknown-layer-type",
    ),
    pytest.param(
        lambda m: m.pop("task"),
        ManifestError,
        r"manifest\.json: does not match the manifest schema: task: Field required",
        id="missing-field",
    ),
    pytest.param(
        lambda m: m["files"].update({"../x": "0" * 64}),
        ManifestError,
        r"manifest\.json: extra file name '\.\./x' must be a plain file name",
        id="extra-file-outside-the-artifact",
    ),
    pytest.param(
        lambda m: m["files"].update({"history.json": "0" * 64}),
        ArtifactNotFoundError,
        r"history\.json: missing history\.json, which manifest\.json lists in files",
        id="extra-file-missing",
    ),
    pytest.param(
        lambda m: m["bn_statistics"].update(kind="median"),
        ManifestError,
        r"manifest\.json: does not match the manifest schema: bn_statistics\.kind",
        id="unknown-statistics-kind",
    ),
    pytest.param(
        lambda m: m["input_standardization"]["std"].__setitem__(0, 2.0),
        ManifestError,
        r"manifest\.json: input_standardization\.std differs from tensor 'input_norm\.std' in weights\.safetensors",
        id="another-standardization",
    ),
    pytest.param(
        lambda m: m.update(bn_fingerprint="0" * 64),
        ChecksumError,
        r"manifest\.json: bn_fingerprint is 0{64} but the BN buffers in weights\.safetensors hash to",
        id="another-bn-fingerprint",
    ),
    pytest.param(
        lambda m: m["canary"]["outputs"][0].__setitem__(0, 123.0),
        CanaryMismatchError,
        r"canary outputs of shape \[4, 3\] differing by up to",
        id="another-canary-output",
    ),
]


@pytest.mark.parametrize(("edit", "error", "pattern"), MANIFEST_EDITS)
def test_edited_manifest_is_refused_with_what_changed(
    artifact_dir: Path, edit: Callable[[ManifestDict], None], error: type[ArtifactError], pattern: str
) -> None:
    edit_manifest(artifact_dir, edit)
    reseal(artifact_dir)  # so the check that names the change is the one that fires, not manifest.sha256
    refusal(artifact_dir, error, pattern)


FORMAT_1_EDITS = [
    pytest.param(
        lambda m: layer(m, "bn1").update(eps=0.5),
        ManifestError,
        r"manifest\.json: BN layer 'bn1': batchnorm says eps=1e-05 but layers\[2\] says eps=0\.5",
        id="another-eps-in-layers-only",
    ),
    pytest.param(
        lambda m: layer(m, "bn2").update(momentum=0.01),
        ManifestError,
        r"manifest\.json: BN layer 'bn2': batchnorm says momentum=0\.1 but layers\[5\] says momentum=0\.01",
        id="another-momentum-in-layers-only",
    ),
    pytest.param(
        lambda m: m["batchnorm"][1].update(num_batches_tracked=5),
        ManifestError,
        r"manifest\.json: BN layer 'bn2': manifest says num_batches_tracked=5 but weights\.safetensors holds 4",
        id="another-num-batches-tracked",
    ),
    pytest.param(
        lambda m: m.update(files={}),
        ManifestError,
        r"manifest\.json: does not match the manifest schema: files: Extra inputs are not permitted",
        id="format-2-field-in-format-1",
    ),
]


@pytest.mark.parametrize(("edit", "error", "pattern"), FORMAT_1_EDITS)
def test_edited_format_1_manifest_is_refused_with_what_changed(
    artifact_dir_v1: Path, edit: Callable[[ManifestDict], None], error: type[ArtifactError], pattern: str
) -> None:
    edit_manifest(artifact_dir_v1, edit)
    reseal(artifact_dir_v1)
    refusal(artifact_dir_v1, error, pattern)


def test_a_changed_extra_file_is_refused_naming_it(artifact_dir: Path) -> None:
    (artifact_dir / "notes.txt").write_bytes(b"exported")
    sha = hashlib.sha256(b"exported").hexdigest()
    edit_manifest(artifact_dir, lambda m: m["files"].update({"notes.txt": sha}))
    reseal(artifact_dir)
    assert _loader[0](artifact_dir).files == {"notes.txt": b"exported"}
    (artifact_dir / "notes.txt").write_bytes(b"edited")
    refusal(
        artifact_dir,
        ChecksumError,
        rf"notes\.txt: its SHA-256 is [0-9a-f]{{64}} but manifest\.json records {sha}",
    )


def test_any_manifest_edit_without_updating_manifest_sha256_is_refused(artifact_dir: Path) -> None:
    edit_manifest(artifact_dir, lambda m: m["metrics"].update(loss=0.0))
    refusal(
        artifact_dir,
        ChecksumError,
        r"manifest\.json: SHA-256 of manifest\.json is [0-9a-f]{64} but manifest\.sha256 records [0-9a-f]{64}: "
        r"the manifest was changed after export",
    )


def test_network_changing_manifest_edit_is_named_even_when_manifest_sha256_is_stale(
    artifact_dir: Path, artifact_dir_v1: Path
) -> None:
    edit_manifest(artifact_dir_v1, lambda m: layer(m, "bn1").update(eps=0.5))
    refusal(
        artifact_dir_v1,
        ManifestError,
        r"BN layer 'bn1': batchnorm says eps=1e-05 but layers\[2\] says eps=0\.5",
    )
    edit_manifest(artifact_dir, lambda m: layer(m, "bn1").update(eps=0.5))
    refusal(artifact_dir, CanaryMismatchError, r"gives canary outputs of shape \[4, 3\] differing by up to")


def test_manifest_that_is_not_json_is_refused(artifact_dir: Path) -> None:
    (artifact_dir / "manifest.json").write_text('{"format_version": 1,')
    refusal(artifact_dir, ManifestError, r"manifest\.json: not valid JSON")


# ------------------------------------------------------------------------------------------ missing files


@pytest.mark.parametrize("missing", ["manifest.json", "manifest.sha256", "weights.safetensors"])
def test_artifact_missing_a_file_is_refused_naming_the_file(artifact_dir: Path, missing: str) -> None:
    (artifact_dir / missing).unlink()
    error = refusal(artifact_dir, ArtifactNotFoundError, rf"{missing}: missing {missing}")
    assert error.path == artifact_dir / missing


def test_path_without_an_artifact_is_refused(tmp_path: Path) -> None:
    refusal(tmp_path / "nowhere", ArtifactNotFoundError, r"nowhere: no artifact directory here")
