"""Training records its history into the artifact (``history.json``) and, with ``--report``, a report page."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from models import load_artifact
from models.errors import ChecksumError
from models.history import HISTORY_FILE, read_history
from training.cli import main
from training.report import REPORT_FILE, render_report

QUICK = ["--epochs", "3", "--hidden", "16,16", "--device", "cpu", "--no-progress"]


def test_every_trained_artifact_carries_its_history_with_one_record_per_epoch(
    breast_cancer_artifact: Path,
) -> None:
    artifact = load_artifact(breast_cancer_artifact)
    history = read_history(artifact)

    assert history is not None and HISTORY_FILE in artifact.manifest.files
    m = artifact.manifest
    assert [e.epoch for e in history.epochs] == list(range(1, m.training["epochs"] + 1))
    assert [e.steps for e in history.epochs] == [e.epoch * history.steps_per_epoch for e in history.epochs]
    assert (history.task, history.metric) == ("classification", "accuracy")
    last = history.epochs[-1]
    assert last.val == {"loss": m.metrics["val_loss"], "accuracy": m.metrics["val_accuracy"]}
    assert {"loss", "accuracy"} <= last.train.keys()


def test_the_bn_trajectory_ends_at_the_statistics_the_artifact_serves(breast_cancer_artifact: Path) -> None:
    artifact = load_artifact(breast_cancer_artifact)
    history = read_history(artifact)
    assert history is not None

    assert [layer.name for layer in history.batchnorm] == [b.name for b in artifact.batchnorm]
    for layer, info in zip(history.batchnorm, artifact.batchnorm, strict=True):
        assert [p.num_batches_tracked for p in layer.trajectory] == [
            e.epoch * history.steps_per_epoch for e in history.epochs
        ]
        assert layer.trajectory[-1].num_batches_tracked == info.num_batches_tracked
        bn = artifact.model.get_submodule(layer.name)
        final = layer.trajectory[-1]
        for summary, served in ((final.running_mean, bn.running_mean), (final.running_var, bn.running_var)):
            served = served.double()
            assert summary.min == pytest.approx(served.min().item(), rel=1e-6)
            assert summary.max == pytest.approx(served.max().item(), rel=1e-6)
            assert summary.mean == pytest.approx(served.mean().item(), rel=1e-6)
        assert all(p.mean_change >= 0 for p in layer.trajectory)


def test_a_regressor_history_records_rmse_and_r2_and_no_accuracy(diabetes_artifact: Path) -> None:
    history = read_history(load_artifact(diabetes_artifact))

    assert history is not None and history.metric == "r2"
    assert all({"loss", "rmse", "r2"} == e.val.keys() and "accuracy" not in e.train for e in history.epochs)


def test_an_edited_history_is_refused_on_load(breast_cancer_artifact: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(breast_cancer_artifact, tmp_path / "bc"))
    path = copy / HISTORY_FILE
    path.write_bytes(path.read_bytes().replace(b'"epoch": 1', b'"epoch": 9', 1))

    with pytest.raises(ChecksumError, match=HISTORY_FILE):
        load_artifact(copy)


def test_the_report_flag_stores_a_page_whose_images_are_checksummed_files_of_the_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--dataset", "breast_cancer", "--out", str(tmp_path / "bc"), "--report", *QUICK])

    artifact = load_artifact(tmp_path / "bc")
    page = artifact.files[REPORT_FILE].decode()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 4
    for name in images:
        assert name in artifact.manifest.files
        assert artifact.files[name].startswith(b"\x89PNG")
    m = artifact.manifest
    assert f"{m.metrics['val_accuracy']:.6g}" in page
    assert m.bn_fingerprint in page
    assert all(f">{b.name}<" in page for b in artifact.batchnorm)
    assert "mean radius" in page and f"{m.input_standardization.mean[0]:.6g}" in page
    assert f"report: {tmp_path / 'bc' / REPORT_FILE}" in capsys.readouterr().out


def test_without_the_report_flag_only_the_history_is_stored(breast_cancer_artifact: Path) -> None:
    assert set(load_artifact(breast_cancer_artifact).manifest.files) == {HISTORY_FILE}


def test_a_cnn_report_draws_its_batchnorm2d_layers_and_every_pixel(digits_artifact: Path) -> None:
    artifact = load_artifact(digits_artifact)
    history = read_history(artifact)
    assert history is not None
    m = artifact.manifest

    files = render_report(
        artifact.model,
        history,
        name=m.name,
        feature_names=m.feature_names,
        class_labels=m.class_labels,
        metrics=m.metrics,
        training=m.training,
    )

    page = files[REPORT_FILE].decode()
    assert all(f">{b.name}<" in page for b in artifact.batchnorm)
    assert page.count("<tr><td>pixel_") == 64
    assert all(data.startswith(b"\x89PNG") for name, data in files.items() if name.endswith(".png"))
    with torch.no_grad():
        assert not artifact.model.training  # rendering read the network, it did not switch it to training
