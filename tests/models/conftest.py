"""Fixtures: the tiny trained networks and their artifacts, built once per session.

The tests only read these; they copy an artifact before tampering with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.models.tiny_nets import KINDS, Trained, downgrade_to_format_1, export, make_trained


@pytest.fixture(scope="session")
def trained_nets() -> dict[str, Trained]:
    return {kind: make_trained(kind) for kind in KINDS}


@pytest.fixture(scope="session")
def exported(trained_nets: dict[str, Trained], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The artifact directory of every trained net; read-only by convention, copy before editing."""
    root = tmp_path_factory.mktemp("exported")
    return {kind: export(trained, root / kind) for kind, trained in trained_nets.items()}


@pytest.fixture
def artifact_dir(exported: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the MLP classifier's artifact, free to tamper with."""
    return Path(shutil.copytree(exported["mlp_bn_before"], tmp_path / "mlp"))


@pytest.fixture
def artifact_dir_v1(exported: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the MLP classifier's artifact, rewritten as format 1 (bnserve 0.1.0)."""
    return downgrade_to_format_1(Path(shutil.copytree(exported["mlp_bn_before"], tmp_path / "mlp_v1")))
