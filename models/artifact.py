"""Save and load artifacts: a directory holding ``manifest.json``, ``manifest.sha256``, ``weights.safetensors``.

    save_artifact("artifacts/breast_cancer", net, layers, name=..., task=..., ...)   # atomic
    artifact = load_artifact("artifacts/breast_cancer")   # verified, eval mode, frozen
    artifact.model(torch.tensor(rows))                    # (B, num_outputs)

Nothing is ever unpickled: tensors come from safetensors, the rest from JSON. docs/ARTIFACT.md is the format.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from models import __version__
from models.atomic import write_dir_atomically
from models.bn import BN_BUFFERS, batchnorm_layers, bn_fingerprint, freeze, training_bn_layers
from models.errors import ManifestError, NonFiniteError
from models.layers import BatchNormSpec, LayerSpec, StandardizeSpec
from models.manifest import (
    FORMAT_VERSION,
    MANIFEST_CHECKSUM_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    BatchNormInfo,
    BNStatistics,
    Canary,
    InputStandardization,
    Manifest,
    RawValue,
    Task,
    Versions,
    WeightsInfo,
)
from models.modules import build_network
from models.preprocessing import Encoder, Preprocessing
from models.reader import (
    EXTRA_FILE_NAME,
    SERVING_FILES,
    batchnorm_info,
    canary_inputs,
    check_canary_outputs,
    check_extra_file_name,
    check_manifest_checksum,
    check_manifest_consistency,
    encoder_of,
    parse_manifest,
    read_artifact_files,
    sha256_hex,
)


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
    encoder: Encoder | None = None  # raw rows -> the network's input, from ``preprocessing``; None: as sent

    def state(self) -> dict[str, np.ndarray]:
        """Gives back every tensor of the unfolded network as numpy (CPU copies), read from it now."""
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def training_bn_layers(self) -> list[str]:
        """Gives back the names of BN layers in training mode (they would normalize with batch statistics)."""
        return training_bn_layers(self.model)


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
    canary_inputs: torch.Tensor | Sequence[Sequence[RawValue]],
    input_shape: list[int] | None = None,
    target_name: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    bn_statistics: BNStatistics | None = None,
    files: dict[str, bytes] | None = None,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Gives back the artifact directory, written atomically: a temporary sibling directory is filled,
    fsynced and renamed into place, so ``out_dir`` is either the old artifact or the complete new one.

    ``files`` are extra files stored beside the weights (a training history, a graph for another runtime):
    their SHA-256 goes into the manifest's ``files`` and ``load_artifact`` verifies them. With
    ``preprocessing``, ``canary_inputs`` are raw rows (numbers, strings, booleans, None) in
    ``feature_names`` order, and the canary outputs are computed through the preprocessing.
    """
    out_dir = Path(out_dir)
    extra = dict(files or {})
    for fname in extra:
        check_extra_file_name(fname, out_dir)
    model = freeze(_cpu_copy(model))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"tensor {key!r} holds NaN or inf; refusing to export", path=out_dir)
    weights = save_safetensors(tensors, metadata={"format": "pt"})
    canary_rows, canary_x = _canary_rows(canary_inputs, preprocessing, feature_names)
    with torch.inference_mode():
        canary_outputs = model(canary_x)
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
        preprocessing=preprocessing,
        bn_statistics=bn_statistics or BNStatistics(),
        bn_fingerprint=bn_fingerprint(tensors, [s.name for s in layers if isinstance(s, BatchNormSpec)]),
        weights=WeightsInfo(sha256=sha256_hex(weights)),
        files={fname: sha256_hex(data) for fname, data in sorted(extra.items())},
        canary=Canary(inputs=canary_rows, outputs=canary_outputs.tolist()),
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


def _canary_rows(
    inputs: torch.Tensor | Sequence[Sequence[RawValue]], pre: Preprocessing | None, feature_names: list[str]
) -> tuple[list[list[RawValue]], torch.Tensor]:
    """Gives back the canary rows as the manifest stores them and as the network takes them."""
    if pre is None:
        x = torch.as_tensor(inputs).detach().to("cpu", torch.float32)
        return x.tolist(), x
    rows = [list(row) for row in inputs]
    return rows, torch.from_numpy(Encoder(pre).encode_rows(rows, feature_names))


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


# ---------------------------------------------------------------------------------------------- load


def load_artifact(path: str | Path, *, device: str | torch.device = "cpu") -> Artifact:
    """Gives back the verified artifact at ``path`` with its network frozen in eval mode on ``device``.

    Raises a subclass of ``ArtifactError`` naming the file and the problem; see docs/ARTIFACT.md for
    the order of the checks (1 to 10a and 12 in ``models/reader.py``, shared with the lean runtime).
    """
    files = read_artifact_files(path)
    model = build_network(files.manifest.layers)
    # torch.tensor copies: the arrays safetensors gives back are read-only views of the file's bytes.
    model.load_state_dict({k: torch.tensor(v) for k, v in files.tensors.items()}, strict=True)
    freeze(model)
    _check_canary(model, files.manifest, files.path)
    check_manifest_checksum(files)
    return Artifact(
        path=files.path,
        manifest=files.manifest,
        model=freeze(model.to(device)),
        weights_sha256=files.weights_sha256,
        bn_fingerprint=files.manifest.bn_fingerprint,
        batchnorm=files.batchnorm,
        files=files.files,
        encoder=encoder_of(files.manifest),
    )


def canary_tensor(m: Manifest, where: Path) -> torch.Tensor:
    """Gives back the canary rows as the network takes them: through the preprocessing when there is one."""
    return torch.from_numpy(canary_inputs(m, where))


def _check_canary(model: nn.Module, m: Manifest, where: Path) -> None:
    inputs = canary_tensor(m, where / MANIFEST_FILE)
    try:
        with torch.inference_mode():
            got = model(inputs)
    except RuntimeError as e:
        raise ManifestError(
            f"the layers in manifest.json do not fit together: {e}", path=where / MANIFEST_FILE
        ) from None
    check_canary_outputs(got.numpy(), m, where)


__all__ = [
    "BN_BUFFERS",
    "EXTRA_FILE_NAME",
    "SERVING_FILES",
    "Artifact",
    "batchnorm_info",
    "batchnorm_layers",
    "check_manifest_consistency",
    "load_artifact",
    "parse_manifest",
    "save_artifact",
    "sha256_hex",
]
