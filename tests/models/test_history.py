"""``history.json``: optional in an artifact, parsed with the shared schema, refused with a message when bad."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models import load_artifact
from models.errors import ManifestError
from models.history import HISTORY_FILE, parse_history, read_history


def test_an_artifact_saved_without_a_history_loads_and_has_none(artifact_dir: Path) -> None:
    artifact = load_artifact(artifact_dir)

    assert HISTORY_FILE not in artifact.manifest.files
    assert read_history(artifact) is None


def test_a_format_1_artifact_loads_and_has_no_history(artifact_dir_v1: Path) -> None:
    artifact = load_artifact(artifact_dir_v1)

    assert artifact.manifest.format_version == 1 and read_history(artifact) is None


def test_a_history_that_breaks_the_schema_is_refused_naming_the_field() -> None:
    bad = b'{"schema_version": 1, "task": "classification", "metric": "accuracy", "steps_per_epoch": 0, "epochs": [], "batchnorm": []}'

    with pytest.raises(
        ManifestError, match=rf"{HISTORY_FILE}: does not match the history schema: steps_per_epoch"
    ):
        parse_history(bad)


def test_a_history_that_is_not_json_is_refused() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_history(b"{epochs")


def test_the_example_history_in_the_artifact_doc_matches_the_schema() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ARTIFACT.md").read_text()
    (example,) = re.findall(r"^```json history\.json\n(.*?)^```$", doc, flags=re.DOTALL | re.MULTILINE)

    history = parse_history(example.encode())

    assert history.epochs[0].val["accuracy"] > 0 and history.batchnorm[0].trajectory[0].epoch == 1
