"""Save and load artifacts: a directory holding ``manifest.json``, ``manifest.sha256``, ``weights.safetensors``.

    save_artifact("artifacts/breast_cancer", net, layers, name=..., task=..., ...)   # atomic
    artifact = load_artifact("artifacts/breast_cancer")   # verified, eval mode, frozen
    artifact.model(torch.tensor(rows))                    # (B, num_outputs)

Nothing is ever unpickled: tensors come from safetensors, the rest from JSON. docs/ARTIFACT.md is the format.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from models import __version__
from models.bn import BN_BUFFERS, batchnorm_layers, bn_fingerprint, freeze
from models.errors import (
    ArtifactNotFoundError,
    CanaryMismatchError,
    ChecksumError,
    ManifestError,
    NonFiniteError,
    TensorMismatchError,
    UnsupportedFormatError,
)
from models.layers import BatchNormSpec, LayerSpec, LinearSpec, StandardizeSpec, build_network
from models.manifest import (
    FORMAT_VERSION,
    MANIFEST_CHECKSUM_FILE,
    MANIFEST_FILE,
    READABLE_FORMAT_VERSIONS,
    WEIGHTS_FILE,
    BatchNormInfo,
    BNStatistics,
    Canary,
    InputStandardization,
    Manifest,
    ManifestV1,
    Task,
    Versions,
    WeightsInfo,
)

SERVING_FILES = (MANIFEST_FILE, MANIFEST_CHECKSUM_FILE, WEIGHTS_FILE)
EXTRA_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Artifact:
    """A verified artifact: the frozen eval-mode network and its manifest."""

    path: Path
    manifest: Manifest
    model: nn.Sequential
    weights_sha256: str
    bn_fingerprint: str
    batchnorm: list[BatchNormInfo]  # every BN layer in network order, derived from layers and weights
    files: dict[str, bytes]  # the manifest's extra files (``files``), each checksum-verified


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- save


def save_artifact(
    out_dir: str | Path,
    model: nn.Sequential,
    layers: list[LayerSpec],
    *,
    name: str,
    task: Task,
    feature_names: list[str],
    class_labels: list[str] | None,
    canary_inputs: torch.Tensor,
    input_shape: list[int] | None = None,
    target_name: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    bn_statistics: BNStatistics | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Gives back the artifact directory, written atomically: a temporary sibling directory is filled,
    fsynced and renamed into place, so ``out_dir`` is either the old artifact or the complete new one.

    ``files`` are extra files stored beside the weights (a training history, a graph for another runtime):
    their SHA-256 goes into the manifest's ``files`` and ``load_artifact`` verifies them.
    """
    out_dir = Path(out_dir)
    extra = dict(files or {})
    for fname in extra:
        _check_extra_file_name(fname, out_dir)
    model = freeze(_cpu_copy(model))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"tensor {key!r} holds NaN or inf; refusing to export", path=out_dir)
    weights = save_safetensors(tensors, metadata={"format": "pt"})
    with torch.inference_mode():
        canary_outputs = model(canary_inputs.detach().to("cpu", torch.float32))
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        task=task,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=Versions(bnserve=__version__, torch=torch.__version__, python=platform.python_version()),
        feature_names=list(feature_names),
        class_labels=class_labels,
        target_name=target_name,
        input_shape=input_shape or [len(feature_names)],
        layers=layers,
        input_standardization=_input_standardization(layers, tensors),
        bn_statistics=bn_statistics or BNStatistics(),
        bn_fingerprint=bn_fingerprint(tensors, [s.name for s in layers if isinstance(s, BatchNormSpec)]),
        weights=WeightsInfo(sha256=sha256_hex(weights)),
        files={fname: sha256_hex(data) for fname, data in sorted(extra.items())},
        canary=Canary(inputs=canary_inputs.tolist(), outputs=canary_outputs.tolist()),
        training=training or {},
        metrics=metrics or {},
    )
    manifest_bytes = orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
    contents = {
        **extra,
        WEIGHTS_FILE: weights,
        MANIFEST_FILE: manifest_bytes,
        MANIFEST_CHECKSUM_FILE: f"{sha256_hex(manifest_bytes)}  {MANIFEST_FILE}\n".encode(),
    }
    write_dir_atomically(out_dir, contents)
    return out_dir


def _check_extra_file_name(fname: str, where: Path) -> None:
    if not EXTRA_FILE_NAME.match(fname) or fname in SERVING_FILES:
        raise ManifestError(
            f"extra file name {fname!r} must be a plain file name (letters, digits, '.', '_', '-'; no "
            f"separators) other than {', '.join(SERVING_FILES)}",
            path=where,
        )


def _cpu_copy(model: nn.Module) -> nn.Sequential:
    import copy

    return copy.deepcopy(model).to("cpu")  # type: ignore[return-value]


def _input_standardization(layers: list[LayerSpec], tensors: dict[str, torch.Tensor]) -> InputStandardization:
    first = layers[0]
    if not isinstance(first, StandardizeSpec):
        raise ValueError(f"the first layer must be Standardize, got {first.type}")
    return InputStandardization(
        layer=first.name,
        mean=tensors[f"{first.name}.mean"].tolist(),
        std=tensors[f"{first.name}.std"].tolist(),
    )


def batchnorm_info(m: Manifest, tensors: dict[str, torch.Tensor]) -> list[BatchNormInfo]:
    """Gives back every BN layer of ``m`` in network order, its settings from ``layers`` and its
    ``num_batches_tracked`` from the weights."""
    return [
        BatchNormInfo(
            name=s.name,
            kind="1d" if s.type == "BatchNorm1d" else "2d",
            num_features=s.num_features,
            momentum=s.momentum,
            eps=s.eps,
            affine=s.affine,
            num_batches_tracked=int(tensors[f"{s.name}.num_batches_tracked"]),
            statistics=m.bn_statistics.kind,
        )
        for s in m.layers
        if isinstance(s, BatchNormSpec)
    ]


def write_dir_atomically(out_dir: Path, files: dict[str, bytes]) -> None:
    """Replaces ``out_dir`` with a directory holding ``files`` (relative path -> bytes; ``a/b`` makes ``a``)
    in one rename: a reader sees the old directory or the complete new one, never a part."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a server running as another user must read it
        for fname, data in files.items():
            (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp / fname, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if out_dir.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            _restore_aside(old, out_dir)
        raise


def _restore_aside(old: Path, out_dir: Path) -> None:
    """Puts the artifact set aside in ``old`` back at ``out_dir`` if nothing replaced it; drops ``old``."""
    with contextlib.suppress(OSError):
        if not out_dir.exists():
            os.replace(old / out_dir.name, out_dir)
        old.rmdir()  # only once empty: never deletes the previous artifact


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------- load


def load_artifact(path: str | Path, *, device: str | torch.device = "cpu") -> Artifact:
    """Gives back the verified artifact at ``path`` with its network frozen in eval mode on ``device``.

    Raises a subclass of ``ArtifactError`` naming the file and the problem; see docs/ARTIFACT.md for
    the order of the checks.
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

    model = build_network(manifest.layers)
    _check_tensors(model, tensors, weights_path)
    _check_buffers_match_manifest(manifest, v1_batchnorm, tensors, manifest_path)
    extra = _read_extra_files(manifest, path)
    model.load_state_dict(tensors, strict=True)
    freeze(model)
    _check_canary(model, manifest, path)

    recorded = checksum_path.read_text().split()[:1]
    if recorded != [sha256_hex(manifest_bytes)]:
        raise ChecksumError(
            f"SHA-256 of {MANIFEST_FILE} is {sha256_hex(manifest_bytes)} but {MANIFEST_CHECKSUM_FILE} records "
            f"{recorded[0] if recorded else 'nothing'}: the manifest was changed after export",
            path=manifest_path,
        )
    return Artifact(
        path=path,
        manifest=manifest,
        model=freeze(model.to(device)),
        weights_sha256=weights_sha,
        bn_fingerprint=manifest.bn_fingerprint,
        batchnorm=batchnorm_info(manifest, tensors),
        files=extra,
    )


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
    n = len(m.feature_names)
    if first.num_features != n or math.prod(m.input_shape) != n:
        raise ManifestError(
            f"feature count disagrees: {n} feature_names, input_shape {m.input_shape}, "
            f"layer {first.name!r} expects {first.num_features} features",
            path=where,
        )
    std = m.input_standardization
    if std.layer != first.name or len(std.mean) != n or len(std.std) != n:
        raise ManifestError(
            f"input_standardization must name layer {first.name!r} and hold {n} means and stds, "
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
        _check_extra_file_name(fname, where)
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


def _read_weights(data: bytes, sha: str, m: Manifest, where: Path) -> dict[str, torch.Tensor]:
    """Gives back the tensors; a checksum mismatch is reported with the most specific cause found."""
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        tensors, parse_error = None, str(e)
    if sha == m.weights.sha256 and tensors is not None:
        return tensors
    mismatch = f"its SHA-256 is {sha} but manifest.json records {m.weights.sha256}"
    if tensors is None:
        raise ChecksumError(f"{mismatch}; the file is not readable safetensors ({parse_error})", path=where)
    # Say what changed when it can be seen, so an edited file is not reported as mere corruption.
    _check_tensors(build_network(m.layers), tensors, where, also=mismatch)
    raise ChecksumError(f"{mismatch}: the file is corrupted or was changed after export", path=where)


def _check_tensors(
    model: nn.Module, tensors: dict[str, torch.Tensor], where: Path, *, also: str = ""
) -> None:
    expected = model.state_dict()
    suffix = f" (also, {also})" if also else ""
    for key, ref in expected.items():
        if key not in tensors:
            raise TensorMismatchError(
                f"missing tensor {key!r} ({_describe(ref)}) that the architecture in manifest.json needs{suffix}",
                path=where,
            )
    for key, t in sorted(tensors.items()):  # safetensors gives them in no fixed order
        if key not in expected:
            raise TensorMismatchError(
                f"unexpected tensor {key!r} ({_describe(t)}) that no layer in manifest.json declares{suffix}",
                path=where,
            )
        ref = expected[key]
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise TensorMismatchError(
                f"tensor {key!r} is {_describe(t)} but the architecture in manifest.json needs "
                f"{_describe(ref)}{suffix}",
                path=where,
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteError(f"tensor {key!r} holds {bad} NaN or inf value(s){suffix}", path=where)


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}"


def _check_buffers_match_manifest(
    m: Manifest, v1_batchnorm: list[BatchNormInfo] | None, tensors: dict[str, torch.Tensor], where: Path
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
        if not torch.equal(torch.tensor(getattr(std, field), dtype=stored.dtype), stored):
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


def _check_canary(model: nn.Module, m: Manifest, where: Path) -> None:
    inputs = torch.tensor(m.canary.inputs, dtype=torch.float32)
    expected = torch.tensor(m.canary.outputs, dtype=torch.float32)
    try:
        with torch.inference_mode():
            got = model(inputs)
    except RuntimeError as e:
        raise ManifestError(
            f"the layers in manifest.json do not fit together: {e}", path=where / MANIFEST_FILE
        ) from None
    if got.shape != expected.shape or not torch.allclose(
        got, expected, atol=m.canary.atol, rtol=m.canary.rtol
    ):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
        raise CanaryMismatchError(
            f"the network rebuilt from {MANIFEST_FILE} and {WEIGHTS_FILE} gives canary outputs of shape "
            f"{list(got.shape)} differing by up to {diff:.3g} from the {list(expected.shape)} recorded at export "
            f"(atol {m.canary.atol}, rtol {m.canary.rtol}): the architecture or weights changed",
            path=where,
        )


__all__ = ["BN_BUFFERS", "Artifact", "batchnorm_layers", "load_artifact", "save_artifact"]
