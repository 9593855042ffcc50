"""Service fixtures: an app whose lifespan has run (artifact loaded, self-test passed), one per artifact.

The artifacts come from tests/conftest.py (``breast_cancer_artifact``: MLP classifier, ``digits_artifact``:
CNN classifier, ``diabetes_artifact``: MLP regressor). Clients are module-scoped: loading takes a moment and
serving never changes the network, which is exactly what these tests check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.serving import serving


@pytest.fixture(scope="module")
def client(breast_cancer_artifact: Path) -> Iterator[TestClient]:
    """Serves the breast-cancer MLP classifier."""
    with serving(breast_cancer_artifact) as client:
        yield client


@pytest.fixture(scope="module")
def digits_client(digits_artifact: Path) -> Iterator[TestClient]:
    """Serves the digits CNN classifier."""
    with serving(digits_artifact) as client:
        yield client


@pytest.fixture(scope="module")
def diabetes_client(diabetes_artifact: Path) -> Iterator[TestClient]:
    """Serves the diabetes MLP regressor."""
    with serving(diabetes_artifact) as client:
        yield client
