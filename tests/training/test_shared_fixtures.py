"""The session artifacts in tests/conftest.py, which the service tests serve, load and describe themselves."""

from __future__ import annotations

from pathlib import Path

from models import load_artifact


def test_the_breast_cancer_fixture_is_a_loadable_mlp_classifier(breast_cancer_artifact: Path) -> None:
    m = load_artifact(breast_cancer_artifact).manifest

    assert (m.task, m.class_labels, m.input_shape) == ("classification", ["malignant", "benign"], [30])
    assert m.metrics["val_accuracy"] > 0.9


def test_the_digits_fixture_is_a_loadable_cnn_on_8x8_images(digits_artifact: Path) -> None:
    artifact = load_artifact(digits_artifact)
    m = artifact.manifest

    assert (m.input_shape, len(m.feature_names), m.training["model"]) == ([1, 8, 8], 64, "cnn")
    assert [b.kind for b in artifact.batchnorm] == ["2d", "2d"]


def test_the_diabetes_fixture_is_a_loadable_regressor_in_real_units(diabetes_artifact: Path) -> None:
    artifact = load_artifact(diabetes_artifact)

    assert (artifact.manifest.task, artifact.manifest.class_labels) == ("regression", None)
    assert artifact.model.get_submodule("output_scale").shift.item() > 100  # mean disease progression ~150
