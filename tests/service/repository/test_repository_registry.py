"""The registry of loaded versions: policies, the atomic switch, leases, refusals, rollback, unload, polling.

The loader is a fake (tests/service/repository/fakes.py) so these tests see only the registry's behaviour;
tests/service/repository/test_repository_serving.py does the same with real artifacts over HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import BadRequest, NotFound, NotReady
from service.inference.repository import ModelRegistry, RepositorySource, VersionStatus
from tests.service.repository.fakes import FakeLoader, FakeVersion, put_version


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def make_registry(loader: FakeLoader) -> Iterator:
    made: list[ModelRegistry[FakeVersion]] = []

    def make(root: Path, **options: object) -> ModelRegistry[FakeVersion]:
        registry: ModelRegistry[FakeVersion] = ModelRegistry(RepositorySource(root), load=loader, **options)  # type: ignore[arg-type]
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


def states(registry: ModelRegistry[FakeVersion]) -> dict[tuple[str, int], str]:
    return {(s.model, s.version): s.state for s in registry.index()}


def answer(registry: ModelRegistry[FakeVersion], model: str | None = None, version: str | None = None) -> str:
    with registry.lease(model, version) as served:
        return f"{served.model}/{served.version}={served.value.value}"


def test_by_default_only_the_latest_version_serves_and_the_older_ones_say_why(
    tmp_path: Path, make_registry
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    put_version(tmp_path, "wine", 2, "w2")
    registry = make_registry(tmp_path)

    registry.refresh().result()

    assert answer(registry) == "wine/2=w2"
    index = {s.version: s for s in registry.index()}
    assert index[2].state == "READY" and index[2].artifact_sha256 is not None
    assert index[1].state == "UNAVAILABLE" and "latest 1" in index[1].reason
    with pytest.raises(NotFound, match="version 1 of model 'wine' is UNAVAILABLE"):
        registry.lease("wine", "1")


def test_a_new_version_is_switched_in_while_a_request_on_the_old_one_finishes_on_it(
    tmp_path: Path, make_registry, loader: FakeLoader
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()
    in_flight = registry.lease()

    put_version(tmp_path, "wine", 2, "w2")
    registry.refresh().result()

    assert answer(registry) == "wine/2=w2"
    old = in_flight.value
    assert (in_flight.version, old.value, old.closed) == (1, "w1", False)  # still whole, still usable
    in_flight.release()
    registry.refresh().result()  # the close was queued on the background thread; this waits for it
    assert old.closed


def test_versions_load_on_the_background_thread_while_the_serving_one_keeps_answering(
    tmp_path: Path, make_registry, loader: FakeLoader
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()
    loader.gate = threading.Event()
    put_version(tmp_path, "wine", 2, "w2")

    pending = registry.refresh()
    deadline = time.monotonic() + 10
    while states(registry).get(("wine", 2)) != "LOADING" and time.monotonic() < deadline:
        time.sleep(0.01)

    assert states(registry)[("wine", 2)] == "LOADING"
    assert answer(registry) == "wine/1=w1"
    loader.gate.set()
    pending.result()
    assert answer(registry) == "wine/2=w2"
    assert set(loader.threads) == {"bnserve-repository_0"}


def test_a_refused_version_says_why_and_the_serving_version_keeps_serving(
    tmp_path: Path, make_registry
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()

    put_version(tmp_path, "wine", 2, "w2", bad="weights.safetensors: SHA-256 mismatch")
    registry.refresh().result()

    assert answer(registry) == "wine/1=w1"
    index = {s.version: s for s in registry.index()}
    assert index[2].state == "UNAVAILABLE" and "SHA-256 mismatch" in index[2].reason
    assert index[1].state == "READY" and "in place of refused version(s) [2]" in index[1].reason
    assert registry.ready


def test_a_refused_version_is_not_retried_until_its_files_change(
    tmp_path: Path, make_registry, loader: FakeLoader
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    bad = put_version(tmp_path, "wine", 2, "w2", bad="canary mismatch")
    registry = make_registry(tmp_path)
    registry.refresh().result()
    attempts = len(loader.threads)

    registry.refresh().result()
    assert len(loader.threads) == attempts

    (bad / "bad").unlink()
    registry.refresh().result()
    assert answer(registry) == "wine/2=w2"


def test_with_latest_two_a_refused_newest_version_leaves_the_two_previous_ones_serving(
    tmp_path: Path, make_registry
) -> None:
    for n in (1, 2):
        put_version(tmp_path, "wine", n, f"w{n}")
    (tmp_path / "wine" / "config.json").write_text('{"version_policy": {"latest": {"num_versions": 2}}}')
    registry = make_registry(tmp_path)
    registry.refresh().result()
    assert registry.serving_versions("wine") == [1, 2]

    put_version(tmp_path, "wine", 3, "w3", bad="missing weights.safetensors")
    registry.refresh().result()

    assert registry.serving_versions("wine") == [1, 2]
    assert states(registry)[("wine", 3)] == "UNAVAILABLE"


def test_loading_an_older_version_rolls_back_and_a_plain_load_restores_the_policy(
    tmp_path: Path, make_registry
) -> None:
    for n in (1, 2):
        put_version(tmp_path, "wine", n, f"w{n}")
    registry = make_registry(tmp_path)
    registry.refresh().result()

    outcome = registry.load("wine", ["1"]).result()

    assert outcome.serving == [1] and answer(registry) == "wine/1=w1"
    registry.refresh().result()  # a rescan (polling) keeps the rollback
    assert answer(registry) == "wine/1=w1"
    registry.load("wine").result()
    assert answer(registry) == "wine/2=w2"


def test_unloading_a_model_frees_its_versions_and_answers_503_until_it_is_loaded(
    tmp_path: Path, make_registry, loader: FakeLoader
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()
    served = loader.loaded[-1]

    registry.unload("wine").result()
    registry.refresh().result()

    assert served.closed
    assert states(registry) == {("wine", 1): "UNAVAILABLE"}
    assert "unloaded by request" in registry.index()[0].reason
    with pytest.raises(NotReady, match="no version ready"):
        registry.lease("wine")
    registry.load("wine").result()
    assert answer(registry) == "wine/1=w1"


def test_unloading_one_version_keeps_the_others(tmp_path: Path, make_registry) -> None:
    for n in (1, 2):
        put_version(tmp_path, "wine", n, f"w{n}")
    (tmp_path / "wine" / "config.json").write_text('{"version_policy": {"all": {}}}')
    registry = make_registry(tmp_path)
    registry.refresh().result()

    registry.unload("wine", "2").result()

    assert registry.serving_versions("wine") == [1]
    with pytest.raises(NotFound, match="not loaded"):
        registry.unload("wine", "2").result()


def test_several_models_each_answer_by_name_and_the_default_is_the_setting(
    tmp_path: Path, make_registry
) -> None:
    put_version(tmp_path, "iris", 1, "i1")
    put_version(tmp_path, "wine", 4, "w4")
    registry = make_registry(tmp_path, default_model="wine")
    registry.refresh().result()

    assert answer(registry) == "wine/4=w4"
    assert answer(registry, "iris") == "iris/1=i1"
    assert registry.models() == ["iris", "wine"]


@pytest.mark.parametrize("model", ["../wine", "/etc", "wine/1", "..", ".hidden", "a\\b", ""])
def test_model_names_that_are_not_one_plain_component_are_a_400_everywhere(
    tmp_path: Path, make_registry, model: str
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()

    for attempt in (
        lambda: registry.lease(model),
        lambda: registry.load(model),
        lambda: registry.unload(model),
    ):
        with pytest.raises(BadRequest, match="model name"):
            attempt()


@pytest.mark.parametrize("version", ["0", "01", "-1", "1.0", "../1", "1/..", "one", ""])
def test_version_names_that_are_not_positive_integers_are_a_400_everywhere(
    tmp_path: Path, make_registry, version: str
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()

    for attempt in (
        lambda: registry.lease("wine", version),
        lambda: registry.load("wine", [version]),
        lambda: registry.unload("wine", version),
    ):
        with pytest.raises(BadRequest, match="version"):
            attempt()


def test_unknown_models_and_versions_are_a_404_that_lists_what_exists(tmp_path: Path, make_registry) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()

    with pytest.raises(NotFound, match="no model 'beer': this server serves 'wine'"):
        registry.lease("beer")
    with pytest.raises(NotFound, match="no version '7'"):
        registry.lease("wine", "7")
    with pytest.raises(NotFound, match="no model 'beer'"):
        registry.load("beer").result()
    with pytest.raises(NotFound, match=r"no version 7; its versions are \[1\]"):
        registry.load("wine", ["7"]).result()


def test_polling_notices_new_and_removed_versions(tmp_path: Path, make_registry) -> None:
    import shutil

    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()
    registry.start_polling(scan_every_s=0.05)

    put_version(tmp_path, "wine", 2, "w2")
    assert _eventually(lambda: answer(registry) == "wine/2=w2")
    shutil.rmtree(tmp_path / "wine" / "2")
    assert _eventually(lambda: answer(registry) == "wine/1=w1")
    shutil.rmtree(tmp_path / "wine")
    assert _eventually(lambda: registry.index() == [])


def test_the_index_entries_name_model_version_state_and_reason(tmp_path: Path, make_registry) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    registry = make_registry(tmp_path)
    registry.refresh().result()

    (status,) = registry.index()

    assert isinstance(status, VersionStatus)
    assert (status.model, status.version, status.state, status.reason) == ("wine", 1, "READY", "serving")


def _eventually(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (NotFound, NotReady):
            pass
        time.sleep(0.02)
    return False


def test_at_startup_a_refused_newest_version_is_replaced_by_the_newest_that_loads(
    tmp_path: Path, make_registry
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    put_version(tmp_path, "wine", 2, "w2", bad="canary mismatch")
    put_version(tmp_path, "wine", 3, "w3", bad="missing weights.safetensors")
    registry = make_registry(tmp_path)

    registry.refresh().result()

    assert answer(registry) == "wine/1=w1"
    index = {s.version: s for s in registry.index()}
    assert (index[3].state, index[2].state, index[1].state) == ("UNAVAILABLE", "UNAVAILABLE", "READY")
    assert "canary mismatch" in index[2].reason and "in place of refused" in index[1].reason


def test_a_specific_policy_never_falls_back_to_versions_it_does_not_name(
    tmp_path: Path, make_registry
) -> None:
    put_version(tmp_path, "wine", 1, "w1")
    put_version(tmp_path, "wine", 2, "w2", bad="canary mismatch")
    (tmp_path / "wine" / "config.json").write_text('{"version_policy": {"specific": {"versions": [2]}}}')
    registry = make_registry(tmp_path)

    registry.refresh().result()

    assert registry.serving_versions("wine") == []
    with pytest.raises(NotReady, match="canary mismatch"):
        registry.lease("wine")


def test_a_single_artifact_is_reloaded_in_place_when_its_files_change_and_kept_when_the_new_ones_fail(
    tmp_path: Path, loader: FakeLoader
) -> None:
    import os

    from service.inference.repository import SingleArtifactSource

    artifact = tmp_path / "wine"
    artifact.mkdir()
    (artifact / "weights.txt").write_text("w1")
    registry: ModelRegistry[FakeVersion] = ModelRegistry(SingleArtifactSource(artifact), load=loader)
    try:
        registry.refresh().result()
        assert answer(registry) == "wine/1=w1"

        (artifact / "weights.txt").write_text("w2-longer")
        registry.refresh().result()
        assert answer(registry) == "wine/1=w2-longer"

        (artifact / "bad").write_text("canary mismatch")
        os.utime(artifact / "weights.txt", ns=(1, 1))
        registry.refresh().result()
        assert answer(registry) == "wine/1=w2-longer"
        (status,) = registry.index()
        assert status.state == "READY" and "canary mismatch" in status.reason
    finally:
        registry.close()
