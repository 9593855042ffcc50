"""Export then load: the served network is the trained one, and a failed export never breaks the old artifact."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

from models import FORMAT_VERSION, load_artifact, model_bn_fingerprint
from models.errors import ArtifactNotFoundError, NonFiniteError
from tests.models.tiny_nets import KINDS, Trained, export

SERVING_FILES = {"manifest.json", "manifest.sha256", "weights.safetensors"}


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_network_gives_the_trained_networks_eval_outputs(
    kind: str, trained_nets: dict[str, Trained], exported: dict[str, Path]
) -> None:
    trained = trained_nets[kind]
    artifact = load_artifact(exported[kind])
    rows = torch.randn(32, trained.rows.shape[1]) * 3 + 2
    with torch.inference_mode():
        torch.testing.assert_close(artifact.model(rows), trained.net(rows), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_network_reproduces_the_canary_outputs_recorded_at_export(
    kind: str, exported: dict[str, Path]
) -> None:
    artifact = load_artifact(exported[kind])
    canary = artifact.manifest.canary
    with torch.inference_mode():
        got = artifact.model(torch.tensor(canary.inputs))
    torch.testing.assert_close(got, torch.tensor(canary.outputs), rtol=0, atol=0)


def test_loaded_network_is_frozen_in_eval_mode(exported: dict[str, Path]) -> None:
    model = load_artifact(exported["cnn"]).model
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_manifest_describes_the_exported_network(
    trained_nets: dict[str, Trained], exported: dict[str, Path]
) -> None:
    trained = trained_nets["mlp_bn_before"]
    artifact = load_artifact(exported["mlp_bn_before"])
    manifest = artifact.manifest
    state = trained.net.state_dict()
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.layers == trained.layers
    assert manifest.feature_names == trained.feature_names
    assert manifest.class_labels == trained.class_labels
    assert manifest.input_standardization.mean == state["input_norm.mean"].tolist()
    assert [(b.name, b.num_batches_tracked, b.statistics) for b in artifact.batchnorm] == [
        ("bn1", 4, "ema"),
        ("bn2", 4, "ema"),
    ]
    assert manifest.bn_fingerprint == model_bn_fingerprint(trained.net)
    assert set(manifest.versions.model_dump()) == {"bnserve", "torch", "python"}


def test_export_writes_exactly_the_three_artifact_files(exported: dict[str, Path]) -> None:
    assert {p.name for p in exported["cnn"].iterdir()} == SERVING_FILES
    assert {p.name for p in exported["cnn"].parent.iterdir()} == set(KINDS)


def test_export_over_an_existing_artifact_replaces_it(
    trained_nets: dict[str, Trained], tmp_path: Path
) -> None:
    out = tmp_path / "model"
    export(trained_nets["mlp_bn_before"], out)
    export(trained_nets["mlp_bn_after"], out)
    artifact = load_artifact(out)
    assert artifact.manifest.name == "mlp_bn_after"
    rows = trained_nets["mlp_bn_after"].rows
    with torch.inference_mode():
        torch.testing.assert_close(artifact.model(rows), trained_nets["mlp_bn_after"].net(rows))
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def _fail_on_call(n: int, real: Callable[..., Any], exc: BaseException) -> Callable[..., Any]:
    """Gives back a stand-in for ``real`` that raises ``exc`` on its n-th call (1-based)."""
    calls = 0

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n:
            raise exc
        return real(*args, **kwargs)

    return stand_in


def _assert_previous_artifact_is_served(out: Path, trained: Trained) -> None:
    artifact = load_artifact(out)
    assert artifact.manifest.name == trained.kind
    with torch.inference_mode():
        torch.testing.assert_close(artifact.model(trained.rows), trained.net(trained.rows))


@pytest.mark.parametrize(
    ("os_function", "failing_call"),
    [
        ("fsync", 2),  # while writing the new files: weights.safetensors done, manifest.json half
        ("replace", 1),  # moving the old artifact aside
        ("replace", 2),  # moving the new artifact into place, the old one already aside
    ],
)
def test_failed_export_leaves_the_previous_artifact_in_place_and_no_temporary_directory(
    os_function: str,
    failing_call: int,
    trained_nets: dict[str, Trained],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "model"
    export(trained_nets["mlp_bn_before"], out)
    real = getattr(os, os_function)
    monkeypatch.setattr(os, os_function, _fail_on_call(failing_call, real, OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export(trained_nets["mlp_bn_after"], out)
    monkeypatch.undo()
    _assert_previous_artifact_is_served(out, trained_nets["mlp_bn_before"])
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_export_that_dies_mid_write_leaves_nothing_loadable_but_the_previous_artifact(
    trained_nets: dict[str, Trained], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    export(trained_nets["mlp_bn_before"], out)
    # A killed process runs no cleanup: the half-written temporary directory stays behind. The second fsync
    # is manifest.json's, so manifest.sha256 is never written.
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)
    monkeypatch.setattr(os, "fsync", _fail_on_call(2, os.fsync, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        export(trained_nets["mlp_bn_after"], out)
    monkeypatch.undo()
    _assert_previous_artifact_is_served(out, trained_nets["mlp_bn_before"])
    (leftover,) = (p for p in tmp_path.iterdir() if p.name != "model")
    assert leftover.name.startswith(".model.tmp-"), "hidden, so no one mistakes it for an artifact"
    assert {p.name for p in leftover.iterdir()} == {"weights.safetensors", "manifest.json"}
    with pytest.raises(ArtifactNotFoundError, match=r"missing manifest\.sha256"):
        load_artifact(leftover)


def test_export_refuses_a_network_with_a_nan_in_a_bn_buffer(
    trained_nets: dict[str, Trained], tmp_path: Path
) -> None:
    broken = replace(trained_nets["mlp_bn_before"], net=copy.deepcopy(trained_nets["mlp_bn_before"].net))
    broken.net.bn2.running_var[3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"'bn2\.running_var' holds NaN"):
        export(broken, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_manifest_is_plain_json_with_the_weights_checksum(exported: dict[str, Path]) -> None:
    manifest = orjson.loads((exported["mlp_bn_before"] / "manifest.json").read_bytes())
    weights = (exported["mlp_bn_before"] / "weights.safetensors").read_bytes()
    assert manifest["weights"] == {
        "file": "weights.safetensors",
        "sha256": hashlib.sha256(weights).hexdigest(),
    }


def test_a_format_1_artifact_still_loads_with_the_same_network(
    exported: dict[str, Path], artifact_dir_v1: Path
) -> None:
    old, new = load_artifact(artifact_dir_v1), load_artifact(exported["mlp_bn_before"])
    assert (old.manifest.format_version, new.manifest.format_version) == (1, FORMAT_VERSION)
    assert old.batchnorm == new.batchnorm
    assert old.manifest.bn_statistics.kind == "ema" and old.files == {}
    rows = torch.tensor(new.manifest.canary.inputs)
    with torch.inference_mode():
        torch.testing.assert_close(old.model(rows), new.model(rows), rtol=0, atol=0)


def test_format_2_stores_the_bn_settings_once(exported: dict[str, Path]) -> None:
    raw = orjson.loads((exported["cnn"] / "manifest.json").read_bytes())
    assert raw["format_version"] == 2 and "batchnorm" not in raw
    assert raw["bn_statistics"] == {"kind": "ema", "world_size": 1, "ema_gap": None}
    assert raw["files"] == {}


def test_extra_files_are_written_checksummed_and_read_back(
    trained_nets: dict[str, Trained], tmp_path: Path
) -> None:
    trained = trained_nets["mlp_bn_before"]
    out = export(trained, tmp_path / "model", files={"history.json": b'{"epochs": []}'})
    artifact = load_artifact(out)
    assert artifact.files == {"history.json": b'{"epochs": []}'}
    assert artifact.manifest.files["history.json"] == hashlib.sha256(b'{"epochs": []}').hexdigest()
