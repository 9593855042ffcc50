"""The repository on disk: names, the atomic next version (models/repository.py), ``python -m training
--repository``, and a scan that never reads outside the repository (service/inference/repository/scan.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from models import load_artifact
from models.errors import RepositoryNameError
from models.repository import check_model_name, parse_version, publish_version, version_dirs
from service.inference.repository import RepositorySource, SingleArtifactSource, VersionPolicy
from service.inference.repository.policy import parse_model_config
from training.cli import main as train_main

QUICK = ["--epochs", "1", "--hidden", "8", "--device", "cpu", "--no-progress"]


def write_files(files: dict[str, str], *, pause_s: float = 0.0):
    def write(directory: Path) -> None:
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
            time.sleep(pause_s)

    return write


@pytest.mark.parametrize("name", ["..", "a/b", "/abs", "", ".hidden", "a\\b", "a..b", "x" * 129, "a b"])
def test_model_names_must_be_one_plain_path_component(name: str) -> None:
    with pytest.raises(RepositoryNameError, match="not valid"):
        check_model_name(name)


def test_model_names_may_hold_letters_digits_dots_dashes_and_underscores() -> None:
    assert check_model_name("breast_cancer-v2.1") == "breast_cancer-v2.1"


@pytest.mark.parametrize("text", ["0", "01", "-1", "1.0", "+1", " 1", "1e3", "../1"])
def test_versions_must_be_positive_integers_without_leading_zeros(text: str) -> None:
    with pytest.raises(RepositoryNameError, match="positive integer"):
        parse_version(text)


def test_publishing_takes_the_next_number_after_the_highest_one(tmp_path: Path) -> None:
    (tmp_path / "wine" / "7").mkdir(parents=True)
    (tmp_path / "wine" / "9").write_text("a file still takes the number")

    path = publish_version(tmp_path, "wine", write_files({"weights": "x"}))

    assert path == tmp_path / "wine" / "10" and (path / "weights").read_text() == "x"
    assert sorted(os.listdir(tmp_path / "wine")) == ["10", "7", "9"]  # the staging directory is gone


def test_concurrent_publishers_never_share_a_version_number(tmp_path: Path) -> None:
    start = threading.Barrier(8)
    published: list[Path] = []

    def publish(i: int) -> None:
        start.wait()
        published.append(publish_version(tmp_path, "wine", write_files({"weights": str(i)})))

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(int(p.name) for p in published) == list(range(1, 9))
    assert sorted((p / "weights").read_text() for p in published) == [str(i) for i in range(8)]


def test_a_reader_polling_the_model_directory_never_sees_a_half_written_version(tmp_path: Path) -> None:
    files = {f"part{i}": "x" for i in range(5)}
    stop, incomplete, seen = threading.Event(), [], set()

    def poll() -> None:
        while not stop.is_set():
            for number, path in version_dirs(tmp_path / "wine").items():
                seen.add(number)
                if sorted(os.listdir(path)) != sorted(files):
                    incomplete.append(number)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(3):
            publish_version(tmp_path, "wine", write_files(files, pause_s=0.01))
    finally:
        stop.set()
        reader.join()

    assert seen == {1, 2, 3} and incomplete == []


def test_training_into_a_repository_writes_version_after_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    for _ in range(2):
        train_main(["--dataset", "iris", "--repository", str(repo), "--name", "flowers", *QUICK])

    assert sorted(version_dirs(repo / "flowers")) == [1, 2]
    artifact = load_artifact(repo / "flowers" / "2")
    assert artifact.manifest.name == "flowers"
    assert artifact.manifest.training["repository"] == str(repo)
    assert str(repo / "flowers" / "2") in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--name", "../escape"], "model name '../escape' is not valid"),
        (["--name", "ok", "--out", "somewhere"], "give out_dir or repository, not both"),
    ],
)
def test_training_refuses_a_bad_repository_name_or_both_destinations_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as e:
        train_main(["--dataset", "iris", "--repository", str(tmp_path / "repo"), *flags, *QUICK])

    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "repo").exists() and not (tmp_path / "escape").exists()


def test_the_scan_lists_models_and_versions_and_skips_what_is_neither(tmp_path: Path) -> None:
    for d in ("wine/1", "wine/3", "wine/01", "wine/v2", "wine/.staging-x", ".hidden/1", "iris/2"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "wine" / "4").write_text("not a directory")

    models = RepositorySource(tmp_path).scan()

    assert {name: sorted(m.versions) for name, m in models.items()} == {"iris": [2], "wine": [1, 3]}


def test_links_leading_out_of_the_repository_are_refused_without_reading_them(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    (outside / "secret.bin").write_text("do not read")
    (repo / "wine" / "1").mkdir(parents=True)
    (repo / "wine" / "1" / "weights.safetensors").symlink_to(outside / "secret.bin")
    (repo / "wine" / "2").symlink_to(outside / "secret")
    (repo / "evil").symlink_to(outside)
    (repo / "wine" / "3").mkdir()
    (repo / "wine" / "4").symlink_to(repo / "wine" / "3")  # a link within the repository is fine

    models = RepositorySource(repo).scan()

    wine = models["wine"].versions
    assert "outside the repository" in (wine[1].problem or "")
    assert "outside the repository" in (wine[2].problem or "") and wine[2].fingerprint == ()
    assert wine[3].problem is None and wine[4].problem is None
    assert "outside the repository" in (models["evil"].problem or "") and models["evil"].versions == {}


def test_a_config_file_sets_the_version_policy_and_a_bad_one_is_reported(tmp_path: Path) -> None:
    for n in (1, 2, 3):
        (tmp_path / "wine" / str(n)).mkdir(parents=True)
    (tmp_path / "iris" / "1").mkdir(parents=True)
    (tmp_path / "wine" / "config.json").write_text('{"version_policy": {"specific": {"versions": [1, 3]}}}')
    (tmp_path / "iris" / "config.json").write_text('{"version_policy": {"newest": {}}}')

    models = RepositorySource(tmp_path).scan()

    assert models["wine"].policy.select(models["wine"].versions) == {1, 3}
    assert "iris/config.json" in (models["iris"].problem or "") and "newest" in (models["iris"].problem or "")


@pytest.mark.parametrize(
    ("config", "selected"),
    [
        ("{}", {5}),
        ('{"version_policy": {"latest": {"num_versions": 2}}}', {4, 5}),
        ('{"version_policy": {"all": {}}}', {1, 4, 5}),
        ('{"version_policy": {"specific": {"versions": [1, 9]}}}', {1, 9}),
    ],
)
def test_version_policies_select_as_tritons_do(config: str, selected: set[int]) -> None:
    assert parse_model_config(config.encode()).version_policy.select([1, 4, 5]) == selected


@pytest.mark.parametrize(
    "config",
    [
        '{"version_policy": {"latest": {"num_versions": 0}}}',
        '{"version_policy": {"all": {}, "latest": {}}}',
        '{"version_policy": {"specific": {"versions": []}}}',
        '{"version_poilcy": {}}',
        "not json",
    ],
)
def test_bad_version_policies_are_refused_with_what_was_expected(config: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_model_config(config.encode())


def test_the_default_policy_is_the_latest_version() -> None:
    assert VersionPolicy().describe() == "latest 1"


def test_a_single_artifact_is_a_one_model_repository_named_by_its_manifest(
    breast_cancer_artifact: Path,
) -> None:
    models = SingleArtifactSource(breast_cancer_artifact).scan()

    assert list(models) == ["breast_cancer"]
    assert models["breast_cancer"].versions[1].path == breast_cancer_artifact
