"""bnserve's shared contract: architectures, BN helpers and the artifact format.

The names below are imported on first use (PEP 562), so ``import models`` costs nothing and the torch-free
parts (the manifest, the layer specs, ``models.lean``) never import torch: the lean runtime serves without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from models.errors import *  # noqa: F403

_LAZY = {  # name -> the module that defines it; torch is imported only by the torch-side modules
    "Artifact": "models.artifact",
    "load_artifact": "models.artifact",
    "save_artifact": "models.artifact",
    "batchnorm_layers": "models.bn",
    "bn_fingerprint": "models.bn",
    "fold_batchnorm": "models.bn",
    "freeze": "models.bn",
    "model_bn_fingerprint": "models.bn",
    "build_network": "models.modules",
    "CNNConfig": "models.cnn",
    "cnn_layers": "models.cnn",
    "LayerSpec": "models.layers",
    "FORMAT_VERSION": "models.manifest",
    "Manifest": "models.manifest",
    "MLPConfig": "models.mlp",
    "mlp_layers": "models.mlp",
    "LeanArtifact": "models.lean",
    "load_lean_artifact": "models.lean",
}

if TYPE_CHECKING:
    from models.artifact import Artifact, load_artifact, save_artifact
    from models.bn import batchnorm_layers, bn_fingerprint, fold_batchnorm, freeze, model_bn_fingerprint
    from models.cnn import CNNConfig, cnn_layers
    from models.layers import LayerSpec
    from models.lean import LeanArtifact, load_lean_artifact
    from models.manifest import FORMAT_VERSION, Manifest
    from models.mlp import MLPConfig, mlp_layers
    from models.modules import build_network


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
