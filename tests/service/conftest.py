"""Service fixtures: an app whose lifespan has run (artifact loaded, self-test passed), one per artifact.

The artifacts come from tests/conftest.py (``breast_cancer_artifact``: MLP classifier, ``digits_artifact``:
CNN classifier, ``diabetes_artifact``: MLP regressor). Clients are module-scoped: loading takes a moment and
serving never changes the network, which is exactly what these tests check.

Each client is served by both runtimes (``BNSERVE_RUNTIME``): every test that takes one runs on torch and on
lean, since everything a client can see must work the same on both. A test about torch's own network takes
``torch_client`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.serving import serving

RUNTIMES = ["torch", "lean"]
CLIENTS = {"client", "digits_client", "diabetes_client", "table_client"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Runs every test served a client on both runtimes: those that take a client, and those parametrized
    with a client's name, which they look up with ``request.getfixturevalue``."""
    names = set(metafunc.fixturenames)
    named = {
        value
        for marker in metafunc.definition.iter_markers("parametrize")
        for values in marker.args[1:2]
        for value in (v for param in values for v in (param if isinstance(param, tuple) else (param,)))
        if isinstance(value, str)
    }
    if names & CLIENTS or named & CLIENTS:
        if "runtime" not in names:
            metafunc.fixturenames.append("runtime")
        metafunc.parametrize("runtime", RUNTIMES, indirect=True, scope="module")


@pytest.fixture(scope="module")
def runtime(request: pytest.FixtureRequest) -> str:
    """The runtime serving this test's clients (``BNSERVE_RUNTIME``)."""
    return str(getattr(request, "param", "torch"))


@pytest.fixture(scope="module")
def client(breast_cancer_artifact: Path, runtime: str) -> Iterator[TestClient]:
    """Serves the breast-cancer MLP classifier."""
    with serving(breast_cancer_artifact, runtime=runtime) as client:
        yield client


@pytest.fixture(scope="module")
def torch_client(breast_cancer_artifact: Path) -> Iterator[TestClient]:
    """Serves the breast-cancer MLP classifier on the torch runtime (for tests about torch's own network)."""
    with serving(breast_cancer_artifact, runtime="torch") as client:
        yield client


@pytest.fixture(scope="module")
def digits_client(digits_artifact: Path, runtime: str) -> Iterator[TestClient]:
    """Serves the digits CNN classifier."""
    with serving(digits_artifact, runtime=runtime) as client:
        yield client


@pytest.fixture(scope="module")
def diabetes_client(diabetes_artifact: Path, runtime: str) -> Iterator[TestClient]:
    """Serves the diabetes MLP regressor."""
    with serving(diabetes_artifact, runtime=runtime) as client:
        yield client
