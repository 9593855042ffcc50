"""The install without torch: requirements-lean.txt is pyproject's dependency list less torch and the training
packages, and the Dockerfile's RUNTIME=lean image installs exactly that."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ONLY = {"torch", "scikit-learn", "tqdm", "pandas", "pyarrow", "matplotlib"}  # tables: training only


def requirement_name(line: str) -> str:
    return re.split(r"[\[<>=!~ ]", line, maxsplit=1)[0].lower()


def lean_requirements() -> list[str]:
    lines = (ROOT / "requirements-lean.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_lean_requirements_are_pyprojects_dependencies_without_torch_and_training() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = [d for d in dependencies if requirement_name(d) not in TRAINING_ONLY]
    assert lean_requirements() == expected  # same lines, same bounds, same order
    assert "torch==2.13.0" in dependencies  # the default install (scripts/serve, scripts/test) keeps torch


def test_the_lean_image_installs_the_lean_requirements_and_never_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    assert re.search(r"^ARG RUNTIME=torch$", dockerfile, re.M)
    assert re.search(r'torch\) pip install --index-url "\$TORCH_INDEX_URL" torch==2\.13\.0', dockerfile)
    assert re.search(r'if \[ "\$RUNTIME" = lean \]; then pip install -r requirements-lean\.txt', dockerfile)
    assert re.search(
        r'if \[ "\$RUNTIME" = lean \]; then pip install --no-deps \.; else pip install \.', dockerfile
    )
    assert "BNSERVE_RUNTIME=$RUNTIME" in dockerfile
    assert "!requirements-lean.txt" in (ROOT / ".dockerignore").read_text()
