"""``python -m training``: help, bad options, bad data and a full run through ``main([...])``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from models import load_artifact
from training import TrainConfig
from training.cli import main

QUICK = ["--epochs", "2", "--hidden", "16", "--device", "cpu", "--no-progress"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_help_documents_the_flags_and_the_keras_momentum_conversion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])

    assert e.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--dataset",
        "--csv",
        "--target",
        "--bn-momentum",
        "--bn-position",
        "--val-fraction",
        "--out",
    ):
        assert flag in help_text
    assert "Keras 0.99 == PyTorch 0.01" in help_text
    assert "at most 20 distinct values" in help_text


def test_a_bad_dataset_choice_lists_the_valid_ones_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "mnist"])

    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'mnist'" in err
    assert all(name in err for name in ("breast_cancer", "wine", "iris", "digits", "diabetes"))


def test_main_writes_a_loadable_artifact_and_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "bc"

    main(
        ["--dataset", "breast_cancer", "--out", str(out_dir), "--bn-momentum", "0.05", "--name", "bc", *QUICK]
    )

    artifact = load_artifact(out_dir)
    m = artifact.manifest
    assert (m.name, m.task, m.class_labels) == ("bc", "classification", ["malignant", "benign"])
    assert {b.momentum for b in artifact.batchnorm} == {0.05}
    assert len(m.canary.inputs) == 4
    out = capsys.readouterr().out
    assert "accuracy" in out and f"{m.metrics['val_accuracy']:.4f}" in out and str(out_dir) in out


def test_the_manifest_records_the_whole_training_configuration_and_metrics(tmp_path: Path) -> None:
    main(["--dataset", "diabetes", "--out", str(tmp_path / "d"), "--weight-decay", "0.001", *QUICK])

    m = load_artifact(tmp_path / "d").manifest
    assert {f.name for f in fields(TrainConfig)} <= m.training.keys()
    assert m.training["weight_decay"] == 0.001 and m.training["hidden"] == [16]
    assert (m.training["model"], m.training["task"], m.training["device"]) == ("mlp", "regression", "cpu")
    assert {"train_loss", "val_loss", "train_rmse", "val_rmse", "val_r2"} <= m.metrics.keys()


def test_bad_csv_data_exits_2_with_the_message_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(
        "age,city,sick\n" + "".join(f"{20 + i},{i},{i % 2}\n" for i in range(11)) + "31,Paris,1\n"
    )

    with pytest.raises(SystemExit) as e:
        main(["--csv", str(csv_path), "--target", "sick", "--out", str(tmp_path / "out"), *QUICK])

    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "feature column 'city' is not numeric (row 12: 'Paris')" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_cnn_for_tabular_data_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "wine", "--model", "cnn", "--out", str(tmp_path / "w"), *QUICK])

    assert e.value.code == 2
    assert "model 'cnn' needs image data" in capsys.readouterr().err


def test_a_diverged_run_exits_1_without_a_traceback_or_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "wine", "--lr", "1e30", "--out", str(tmp_path / "w"), *QUICK])

    assert e.value.code == 1
    assert "training diverged in epoch 1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_python_dash_m_training_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "--dataset", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )

    assert result.returncode == 2
    assert "usage: python -m training" in result.stderr and "breast_cancer" in result.stderr
