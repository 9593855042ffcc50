from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.fixture(autouse=True)
def no_bnserve_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own BNSERVE_* variables must not leak into these tests."""
    for key in list(os.environ):
        if key.startswith("BNSERVE_"):
            monkeypatch.delenv(key)


def test_settings_default_to_serving_artifacts_breast_cancer_on_localhost_8000() -> None:
    settings = Settings()

    assert settings.model_dir == Path("artifacts/breast_cancer")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_settings_read_bnserve_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNSERVE_MODEL_DIR", "artifacts/wine")
    monkeypatch.setenv("BNSERVE_PORT", "9000")
    monkeypatch.setenv("BNSERVE_MAX_ROWS", "16")
    monkeypatch.setenv("BNSERVE_FOLD_BN", "false")

    settings = Settings()

    assert settings.model_dir == Path("artifacts/wine")
    assert settings.port == 9000
    assert settings.max_rows == 16
    assert settings.fold_bn is False


def test_settings_ignore_variables_without_the_bnserve_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DIR", "elsewhere")
    monkeypatch.setenv("PORT", "1234")

    settings = Settings()

    assert settings.model_dir == Path("artifacts/breast_cancer")
    assert settings.port == 8000


def test_explicit_settings_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNSERVE_MODEL_DIR", "artifacts/wine")

    assert Settings(model_dir=Path("artifacts/iris")).model_dir == Path("artifacts/iris")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BNSERVE_PORT", "70000"), ("BNSERVE_MAX_ROWS", "0"), ("BNSERVE_DEVICE", "tpu")],
)
def test_settings_refuse_an_invalid_value_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError, match=variable.removeprefix("BNSERVE_").lower()):
        Settings()
