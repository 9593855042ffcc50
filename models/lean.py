"""Load an artifact without torch: every check ``load_artifact`` makes, the network computed with numpy.

    artifact = load_lean_artifact("artifacts/breast_cancer")   # verified: checks 1 to 12 of docs/ARTIFACT.md
    artifact.network(rows)                                       # (B, num_outputs), float32, BN as exported
    net, diff = fold(artifact)                                   # BN folded; diff: the fold check's measure

The lean runtime of the service (``BNSERVE_RUNTIME=lean``) serves these; nothing here imports torch, so a
process that uses only this module never pays torch's import time or memory. Its answers equal the torch
network's within 1e-5 (tests/models/test_lean.py), the canary tolerance being 1e-5 too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import ManifestError
from models.layers import RescaleSpec
from models.manifest import MANIFEST_FILE, BatchNormInfo, Manifest
from models.numpy_net import Network, build_network
from models.preprocessing import Encoder
from models.reader import (
    canary_inputs,
    check_canary_outputs,
    check_manifest_checksum,
    encoder_of,
    read_artifact_files,
)


@dataclass
class LeanArtifact:
    """A verified artifact as numpy: the manifest, the tensors as stored, the network as exported."""

    path: Path
    manifest: Manifest
    tensors: dict[str, np.ndarray]  # as stored, read-only: the BN buffers /bn-stats reports come from here
    network: Network  # BN unfolded, exactly the exported network; the canary check ran on it
    weights_sha256: str
    bn_fingerprint: str
    batchnorm: list[BatchNormInfo]  # every BN layer in network order, derived from layers and weights
    files: dict[str, bytes]  # the manifest's extra files (``files``), each checksum-verified
    encoder: Encoder | None = None  # raw rows -> the network's input, from ``preprocessing``; None: as sent

    def state(self) -> dict[str, np.ndarray]:
        """Gives back every tensor as stored (read-only arrays: the numpy network computes from these)."""
        return self.tensors

    def training_bn_layers(self) -> list[str]:
        """Gives back no layer: the numpy network computes eval-mode BN only."""
        return []


def load_lean_artifact(path: str | Path) -> LeanArtifact:
    """Gives back the verified artifact at ``path``, its network computed with numpy.

    Runs the checks of docs/ARTIFACT.md in order, check 11 (the canary) on the numpy network; raises the
    same ``ArtifactError`` subclasses as ``load_artifact``, and ``UnsupportedLayerError`` for a layer the
    numpy network does not compute.
    """
    files = read_artifact_files(path)
    network = build_network(files.manifest.layers, files.tensors)
    inputs = canary_inputs(files.manifest, files.path / MANIFEST_FILE)  # raw rows encoded, with preprocessing
    try:
        got = network(inputs)
    except ValueError as e:  # numpy's shape errors: layers whose sizes do not chain
        raise ManifestError(
            f"the layers in manifest.json do not fit together: {e}", path=files.path / MANIFEST_FILE
        ) from None
    check_canary_outputs(got, files.manifest, files.path)
    check_manifest_checksum(files)
    return LeanArtifact(
        path=files.path,
        manifest=files.manifest,
        tensors=files.tensors,
        network=network,
        weights_sha256=files.weights_sha256,
        bn_fingerprint=files.manifest.bn_fingerprint,
        batchnorm=files.batchnorm,
        files=files.files,
        encoder=encoder_of(files.manifest),
    )


def fold(artifact: LeanArtifact) -> tuple[Network, float]:
    """Gives back the network with BN folded into the Linear/Conv2d before it, and the largest difference
    between its outputs and the unfolded network's on the canary inputs (the fold check).

    The difference is in the network's own units: before a final ``Rescale`` (regression), whose
    multiplication by the target's standard deviation would scale float32 rounding along with it.
    """
    m = artifact.manifest
    folded = build_network(m.layers, artifact.tensors, fold=True)
    x = canary_inputs(m, artifact.path / MANIFEST_FILE)
    last = m.layers[-1]
    scale = artifact.tensors[f"{last.name}.scale"] if isinstance(last, RescaleSpec) else np.float32(1.0)
    diff = (artifact.network(x).astype(np.float64) - folded(x)) / scale
    return folded, float(np.abs(diff).max())
