"""Read and verify an artifact's files without torch: every check of docs/ARTIFACT.md but the canary.

    files = read_artifact_files("artifacts/breast_cancer")   # checks 1 to 10a; tensors as numpy arrays
    ... run the canary (check 11) on the network you built from files.manifest and files.tensors ...
    check_manifest_checksum(files)                            # check 12

Both loaders build on it: ``models.artifact.load_artifact`` (torch) and ``models.lean.load_lean_artifact``
(numpy), so both refuse exactly the same artifacts with exactly the same errors.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors

from models import __version__
from models.errors import (
    ArtifactNotFoundError,
    CanaryMismatchError,
    ChecksumError,
    InputError,
    ManifestError,
    NonFiniteError,
    TensorMismatchError,
    UnsupportedFormatError,
)
from models.layers import (
    BatchNormSpec,
    Conv2dSpec,
    LayerSpec,
    LinearSpec,
    RescaleSpec,
    StandardizeSpec,
)
from models.manifest import (
    MANIFEST_CHECKSUM_FILE,
    MANIFEST_FILE,
    READABLE_FORMAT_VERSIONS,
    WEIGHTS_FILE,
    BatchNormInfo,
    Manifest,
    ManifestV1,
)
from models.preprocessing import CategoricalFeature, Encoder, Preprocessing

SERVING_FILES = (MANIFEST_FILE, MANIFEST_CHECKSUM_FILE, WEIGHTS_FILE)
EXTRA_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_LE = {"running_mean": "<f4", "running_var": "<f4", "num_batches_tracked": "<i8"}

TensorShapes = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, numpy dtype name)


@dataclass
class ArtifactFiles:
    """An artifact's files once checks 1 to 10a passed: the manifest, the tensors, the extra files."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    weights_sha256: str
    tensors: dict[
        str, np.ndarray
    ]  # exactly the tensors the layers declare, shapes and dtypes checked, finite
    files: dict[str, bytes]  # the manifest's extra files, each checksum-verified

    @property
    def batchnorm(self) -> list[BatchNormInfo]:
        return batchnorm_info(self.manifest, self.tensors)

    @property
    def encoder(self) -> Encoder | None:
        """Raw rows -> the network's input, from the manifest's ``preprocessing``; None: rows go in as sent."""
        return encoder_of(self.manifest)


class VerifiedArtifact(Protocol):
    """What both loaders give back (``models.artifact.Artifact``, ``models.lean.LeanArtifact``), as a server
    uses it whichever runtime computes the network."""

    path: Path
    manifest: Manifest
    weights_sha256: str
    bn_fingerprint: str
    batchnorm: list[BatchNormInfo]
    files: dict[str, bytes]
    encoder: Encoder | None  # raw rows -> the network's input, from ``preprocessing``; None: as sent

    def state(self) -> Mapping[str, np.ndarray]:
        """Gives back every tensor of the unfolded network as numpy, read from the network now."""
        ...

    def training_bn_layers(self) -> list[str]:
        """Gives back the names of BN layers that would normalize with batch statistics (none, served)."""
        ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_artifact_files(path: str | Path) -> ArtifactFiles:
    """Gives back the artifact's files at ``path`` after checks 1 to 10a of docs/ARTIFACT.md.

    Raises a subclass of ``ArtifactError`` naming the file and the problem.
    """
    path = Path(path)
    manifest_path, weights_path, checksum_path = (
        path / f for f in (MANIFEST_FILE, WEIGHTS_FILE, MANIFEST_CHECKSUM_FILE)
    )
    if not path.is_dir():
        raise ArtifactNotFoundError(
            "no artifact directory here (train one with `python -m training`)", path=path
        )
    for p in (manifest_path, weights_path, checksum_path):
        if not p.is_file():
            raise ArtifactNotFoundError(
                f"missing {p.name}: an artifact needs {MANIFEST_FILE}, "
                f"{MANIFEST_CHECKSUM_FILE} and {WEIGHTS_FILE}",
                path=p,
            )
    manifest_bytes = manifest_path.read_bytes()
    manifest, v1_batchnorm = _read_manifest(manifest_bytes, manifest_path)
    check_manifest_consistency(manifest, manifest_path)

    weights_bytes = weights_path.read_bytes()
    weights_sha = sha256_hex(weights_bytes)
    tensors = _read_weights(weights_bytes, weights_sha, manifest, weights_path)
    for array in tensors.values():
        array.setflags(write=False)  # the frozen statistics: nothing downstream may change them
    check_tensors(manifest.layers, tensors, weights_path)
    _check_buffers_match_manifest(manifest, v1_batchnorm, tensors, manifest_path)
    extra = _read_extra_files(manifest, path)
    return ArtifactFiles(path, manifest, manifest_bytes, weights_sha, tensors, extra)


def check_manifest_checksum(files: ArtifactFiles) -> None:
    """Check 12, last on purpose (docs/ARTIFACT.md): raises ``ChecksumError`` unless ``manifest.sha256``
    records the SHA-256 of ``manifest.json`` as read."""
    recorded = (files.path / MANIFEST_CHECKSUM_FILE).read_text().split()[:1]
    actual = sha256_hex(files.manifest_bytes)
    if recorded != [actual]:
        raise ChecksumError(
            f"SHA-256 of {MANIFEST_FILE} is {actual} but {MANIFEST_CHECKSUM_FILE} records "
            f"{recorded[0] if recorded else 'nothing'}: the manifest was changed after export",
            path=files.path / MANIFEST_FILE,
        )


def encoder_of(m: Manifest) -> Encoder | None:
    """Gives back the encoder of the manifest's ``preprocessing``, or None without one."""
    return Encoder(m.preprocessing) if m.preprocessing is not None else None


def canary_inputs(m: Manifest, where: Path) -> np.ndarray:
    """Gives back ``canary.inputs`` as the network takes them, float32 (B, input width): through the
    preprocessing when there is one (the stored rows are raw then: numbers, text, booleans, null)."""
    if m.preprocessing is None:
        return np.asarray(m.canary.inputs, dtype=np.float32)
    try:
        return Encoder(m.preprocessing).encode_rows(m.canary.inputs, m.feature_names)
    except InputError as e:
        raise ManifestError(f"canary inputs do not fit the preprocessing: {e}", path=where) from None


def check_canary_outputs(got: np.ndarray, m: Manifest, where: Path) -> None:
    """Check 11, once the network ran on ``canary.inputs``: raises ``CanaryMismatchError`` unless ``got``
    has the shape of ``canary.outputs`` and lies within ``canary.atol``/``canary.rtol`` of it."""
    expected = np.asarray(m.canary.outputs, dtype=np.float32)
    if got.shape != expected.shape or not np.allclose(got, expected, atol=m.canary.atol, rtol=m.canary.rtol):
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("nan")
        raise CanaryMismatchError(
            f"the network rebuilt from {MANIFEST_FILE} and {WEIGHTS_FILE} gives canary outputs of shape "
            f"{list(got.shape)} differing by up to {diff:.3g} from the {list(expected.shape)} recorded at export "
            f"(atol {m.canary.atol}, rtol {m.canary.rtol}): the architecture or weights changed",
            path=where,
        )


# ---------------------------------------------------------------------------------------------- manifest


def parse_manifest(data: bytes, where: Path) -> Manifest:
    """Gives back the validated manifest (a format 1 manifest upgraded to the format 2 view); the format
    version is checked before the schema."""
    return _read_manifest(data, where)[0]


def _read_manifest(data: bytes, where: Path) -> tuple[Manifest, list[BatchNormInfo] | None]:
    """Gives back the format 2 view of the manifest and, for format 1, the ``batchnorm`` list it stored."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ManifestError(f"not valid JSON: {e}", path=where) from None
    if not isinstance(raw, dict):
        raise ManifestError(f"expected a JSON object, got {type(raw).__name__}", path=where)
    version = raw.get("format_version")
    if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
        raise UnsupportedFormatError(
            f"format_version {version!r} is not supported: this bnserve {__version__} reads format_version "
            f"{' or '.join(str(v) for v in READABLE_FORMAT_VERSIONS)}",
            path=where,
        )
    try:
        if version == 1:
            v1 = ManifestV1.model_validate(raw)
            _check_v1_batchnorm(v1, where)
            return Manifest.from_v1(v1), v1.batchnorm
        return Manifest.model_validate(raw), None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:10]
        )
        raise ManifestError(f"does not match the manifest schema: {problems}", path=where) from None


def _check_v1_batchnorm(m: ManifestV1, where: Path) -> None:
    """Raises ``ManifestError`` where a format 1 manifest's ``batchnorm`` list disagrees with its layers."""
    bn_specs = [(i, s) for i, s in enumerate(m.layers) if isinstance(s, BatchNormSpec)]
    if [s.name for _, s in bn_specs] != [b.name for b in m.batchnorm]:
        raise ManifestError(
            f"batchnorm lists layers {[b.name for b in m.batchnorm]} but layers holds BN layers "
            f"{[s.name for _, s in bn_specs]}",
            path=where,
        )
    for (i, spec), info in zip(bn_specs, m.batchnorm, strict=True):
        kind = "1d" if spec.type == "BatchNorm1d" else "2d"
        for field, in_layers, in_info in (
            ("kind", kind, info.kind),
            ("num_features", spec.num_features, info.num_features),
            ("eps", spec.eps, info.eps),
            ("momentum", spec.momentum, info.momentum),
            ("affine", spec.affine, info.affine),
        ):
            if in_layers != in_info:
                raise ManifestError(
                    f"BN layer {spec.name!r}: batchnorm says {field}={in_info!r} but layers[{i}] says "
                    f"{field}={in_layers!r}",
                    path=where,
                )


def check_manifest_consistency(m: Manifest, where: Path) -> None:
    """Raises ``ManifestError`` where the manifest contradicts itself."""
    first = m.layers[0] if m.layers else None
    if not isinstance(first, StandardizeSpec):
        raise ManifestError("layers[0] must be the Standardize input layer", path=where)
    names = [s.name for s in m.layers]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ManifestError(f"layer names must be unique, repeated: {repeated}", path=where)
    n, width = len(m.feature_names), m.input_width
    if m.preprocessing is not None:
        _check_preprocessing(m.preprocessing, n, where)
    if first.num_features != width or math.prod(m.input_shape) != n:
        made = "" if m.preprocessing is None else f", preprocessing makes {width} input columns of them"
        raise ManifestError(
            f"feature count disagrees: {n} feature_names, input_shape {m.input_shape}{made}, "
            f"layer {first.name!r} expects {first.num_features} features",
            path=where,
        )
    std = m.input_standardization
    if std.layer != first.name or len(std.mean) != width or len(std.std) != width:
        raise ManifestError(
            f"input_standardization must name layer {first.name!r} and hold {width} means and stds, "
            f"got layer {std.layer!r} with {len(std.mean)} means and {len(std.std)} stds",
            path=where,
        )
    bn_names = {s.name for s in m.layers if isinstance(s, BatchNormSpec)}
    gap = m.bn_statistics.ema_gap
    if gap is not None and {g.layer for g in gap} != bn_names:
        raise ManifestError(
            f"bn_statistics.ema_gap names layers {sorted(g.layer for g in gap)} but the BN layers are "
            f"{sorted(bn_names)}",
            path=where,
        )
    for fname in m.files:
        check_extra_file_name(fname, where)
    if m.task == "classification" and (not m.class_labels or len(m.class_labels) < 2):
        raise ManifestError(
            f"a classification manifest needs at least 2 class_labels, got {m.class_labels}", path=where
        )
    if m.task == "regression" and m.class_labels is not None:
        raise ManifestError("a regression manifest must have class_labels null", path=where)
    head = next((s for s in reversed(m.layers) if isinstance(s, LinearSpec)), None)
    if head is None or head.out_features != m.num_outputs:
        raise ManifestError(
            f"the last Linear layer must have {m.num_outputs} outputs for task {m.task!r}, "
            f"got {head.out_features if head else 'no Linear layer'}",
            path=where,
        )
    if len(m.canary.inputs) != len(m.canary.outputs) or any(len(r) != n for r in m.canary.inputs):
        raise ManifestError(f"canary needs as many outputs as inputs, each input with {n} values", path=where)
    if m.preprocessing is None and any(
        isinstance(v, bool) or not isinstance(v, float) for r in m.canary.inputs for v in r
    ):
        raise ManifestError(
            "canary inputs must be numbers: only preprocessing takes text or null", path=where
        )


def _check_preprocessing(pre: Preprocessing, n: int, where: Path) -> None:
    if len(pre.features) != n:
        raise ManifestError(
            f"preprocessing.features must describe the {n} feature_names, got {len(pre.features)}", path=where
        )
    tokens = {t.strip() for t in pre.missing_tokens}
    for j, f in enumerate(pre.features):
        if not isinstance(f, CategoricalFeature):
            continue
        where_f = f"preprocessing.features[{j}]"
        if len(f.frequencies) != len(f.categories) or len(set(f.categories)) != len(f.categories):
            raise ManifestError(
                f"{where_f}: categories must be distinct, with one frequency each; got {len(f.categories)} "
                f"categories ({len(set(f.categories))} distinct) and {len(f.frequencies)} frequencies",
                path=where,
            )
        if clash := sorted(tokens.intersection(f.categories)):
            raise ManifestError(f"{where_f}: categories {clash} are missing tokens too", path=where)


def check_extra_file_name(fname: str, where: Path) -> None:
    if not EXTRA_FILE_NAME.match(fname) or fname in SERVING_FILES:
        raise ManifestError(
            f"extra file name {fname!r} must be a plain file name (letters, digits, '.', '_', '-'; no "
            f"separators) other than {', '.join(SERVING_FILES)}",
            path=where,
        )


def batchnorm_info(m: Manifest, tensors: Mapping[str, object]) -> list[BatchNormInfo]:
    """Gives back every BN layer of ``m`` in network order, its settings from ``layers`` and its
    ``num_batches_tracked`` from the weights (numpy arrays or torch tensors)."""
    return [
        BatchNormInfo(
            name=s.name,
            kind="1d" if s.type == "BatchNorm1d" else "2d",
            num_features=s.num_features,
            momentum=s.momentum,
            eps=s.eps,
            affine=s.affine,
            num_batches_tracked=int(tensors[f"{s.name}.num_batches_tracked"]),  # type: ignore[call-overload]
            statistics=m.bn_statistics.kind,
        )
        for s in m.layers
        if isinstance(s, BatchNormSpec)
    ]


# ---------------------------------------------------------------------------------------------- tensors


def layer_tensors(spec: LayerSpec) -> TensorShapes:
    """Gives back the tensors a layer stores, as docs/ARTIFACT.md's layer table lists them (the torch module
    built from ``spec`` has exactly these in its state dict; tests/models/test_lean.py checks it)."""
    f32 = "float32"
    shapes: TensorShapes
    match spec:
        case StandardizeSpec(num_features=n):
            shapes = {"mean": ((n,), f32), "std": ((n,), f32)}
        case LinearSpec():
            shapes = {"weight": ((spec.out_features, spec.in_features), f32)}
            if spec.bias:
                shapes["bias"] = ((spec.out_features,), f32)
        case Conv2dSpec():
            k = spec.kernel_size
            shapes = {"weight": ((spec.out_channels, spec.in_channels, k, k), f32)}
            if spec.bias:
                shapes["bias"] = ((spec.out_channels,), f32)
        case BatchNormSpec(num_features=c):
            shapes = {"weight": ((c,), f32), "bias": ((c,), f32)} if spec.affine else {}
            shapes |= {"running_mean": ((c,), f32), "running_var": ((c,), f32)}
            shapes["num_batches_tracked"] = ((), "int64")
        case RescaleSpec(num_features=n):
            shapes = {"scale": ((n,), f32), "shift": ((n,), f32)}
        case _:
            shapes = {}
    return {f"{spec.name}.{key}": shape for key, shape in shapes.items()}


def expected_tensors(layers: list[LayerSpec]) -> TensorShapes:
    """Gives back every tensor the network of ``layers`` stores, in network order."""
    return {key: shape for spec in layers for key, shape in layer_tensors(spec).items()}


def _read_weights(data: bytes, sha: str, m: Manifest, where: Path) -> dict[str, np.ndarray]:
    """Gives back the tensors; a checksum mismatch is reported with the most specific cause found."""
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError) as e:
        tensors, parse_error = None, str(e)
    if sha == m.weights.sha256 and tensors is not None:
        return tensors
    mismatch = f"its SHA-256 is {sha} but manifest.json records {m.weights.sha256}"
    if tensors is None:
        raise ChecksumError(f"{mismatch}; the file is not readable safetensors ({parse_error})", path=where)
    # Say what changed when it can be seen, so an edited file is not reported as mere corruption.
    check_tensors(m.layers, tensors, where, also=mismatch)
    raise ChecksumError(f"{mismatch}: the file is corrupted or was changed after export", path=where)


def check_tensors(
    layers: list[LayerSpec], tensors: Mapping[str, np.ndarray], where: Path, *, also: str = ""
) -> None:
    """Check 8: raises unless ``tensors`` are exactly the ones ``layers`` declare, shaped and typed as
    declared, and finite."""
    expected = expected_tensors(layers)
    suffix = f" (also, {also})" if also else ""
    for key, ref in expected.items():
        if key not in tensors:
            raise TensorMismatchError(
                f"missing tensor {key!r} ({_describe(*ref)}) that the architecture in manifest.json needs{suffix}",
                path=where,
            )
    for key, t in sorted(tensors.items()):  # safetensors gives them in no fixed order
        if key not in expected:
            raise TensorMismatchError(
                f"unexpected tensor {key!r} ({_describe(t.shape, t.dtype.name)}) that no layer in "
                f"manifest.json declares{suffix}",
                path=where,
            )
        ref = expected[key]
        if (tuple(t.shape), t.dtype.name) != ref:
            raise TensorMismatchError(
                f"tensor {key!r} is {_describe(t.shape, t.dtype.name)} but the architecture in manifest.json "
                f"needs {_describe(*ref)}{suffix}",
                path=where,
            )
        if t.dtype.kind == "f" and not bool(np.isfinite(t).all()):
            bad = int((~np.isfinite(t)).sum())
            raise NonFiniteError(f"tensor {key!r} holds {bad} NaN or inf value(s){suffix}", path=where)


def _describe(shape: tuple[int, ...], dtype: str) -> str:
    return f"{dtype} {list(shape)}"


def bn_fingerprint(tensors: Mapping[str, np.ndarray], bn_names: list[str]) -> str:
    """Gives back the SHA-256 over every BN buffer, in network order (see docs/ARTIFACT.md).

    For each BN layer name, for each of running_mean, running_var, num_batches_tracked: the UTF-8 key
    ``"<layer>.<buffer>"`` then the tensor's little-endian bytes (float32 / int64), row-major.
    """
    h = hashlib.sha256()
    for name in bn_names:
        for buf in BN_BUFFERS:
            key = f"{name}.{buf}"
            h.update(key.encode())
            h.update(np.ascontiguousarray(tensors[key], dtype=_LE[buf]).tobytes())
    return h.hexdigest()


def _check_buffers_match_manifest(
    m: Manifest, v1_batchnorm: list[BatchNormInfo] | None, tensors: Mapping[str, np.ndarray], where: Path
) -> None:
    for info in v1_batchnorm or ():
        tracked = int(tensors[f"{info.name}.num_batches_tracked"])
        if tracked != info.num_batches_tracked:
            raise ManifestError(
                f"BN layer {info.name!r}: manifest says num_batches_tracked={info.num_batches_tracked} but "
                f"{WEIGHTS_FILE} holds {tracked}",
                path=where,
            )
    std = m.input_standardization
    for field in ("mean", "std"):
        stored = tensors[f"{std.layer}.{field}"]
        if not np.array_equal(np.asarray(getattr(std, field), dtype=stored.dtype), stored):
            raise ManifestError(
                f"input_standardization.{field} differs from tensor '{std.layer}.{field}' in {WEIGHTS_FILE}",
                path=where,
            )
    if bool((tensors[f"{std.layer}.std"] <= 0).any()):
        raise ManifestError("input_standardization.std must be positive everywhere", path=where)
    actual = bn_fingerprint(tensors, [s.name for s in m.layers if isinstance(s, BatchNormSpec)])
    if actual != m.bn_fingerprint:
        raise ChecksumError(
            f"bn_fingerprint is {m.bn_fingerprint} but the BN buffers in {WEIGHTS_FILE} hash to {actual}",
            path=where,
        )


def _read_extra_files(m: Manifest, where: Path) -> dict[str, bytes]:
    """Gives back the bytes of every file the manifest's ``files`` lists, each checked against its SHA-256."""
    out = {}
    for fname, sha in m.files.items():
        p = where / fname
        if not p.is_file() or p.is_symlink():
            raise ArtifactNotFoundError(f"missing {fname}, which manifest.json lists in files", path=p)
        data = p.read_bytes()
        if sha256_hex(data) != sha:
            raise ChecksumError(
                f"its SHA-256 is {sha256_hex(data)} but manifest.json records {sha}: the file is corrupted "
                "or was changed after export",
                path=p,
            )
        out[fname] = data
    return out
