"""Several workers share one set of loaded versions (service/inference/repository/shared.py): two registries
in one process stand in for two worker processes sharing a state directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.inference.repository import ModelRegistry, RepositorySource, SharedOverrides, WorkerBoard
from tests.service.repository.fakes import FakeLoader, FakeVersion, put_version


class Worker:
    def __init__(self, repo: Path, state: Path, pid: int) -> None:
        self.board = WorkerBoard(state, pid=pid)
        self.registry: ModelRegistry[FakeVersion] = ModelRegistry(
            RepositorySource(repo),
            load=FakeLoader(),
            overrides=SharedOverrides(state),
            on_change=lambda: self.board.publish(self.registry.index(), self.registry.applied_generation),
        )
        self.registry.refresh().result()
        self.registry.start_polling(watch_every_s=0.05)

    def serving(self) -> list[int]:
        return self.registry.serving_versions("wine")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    import os

    for n in (1, 2):
        put_version(tmp_path / "repo", "wine", n, f"w{n}")
    # Worker pids must be alive to count: this process's and its parent's are.
    pair = (
        Worker(tmp_path / "repo", tmp_path / "state", os.getpid()),
        Worker(tmp_path / "repo", tmp_path / "state", os.getppid()),
    )
    yield pair
    for w in pair:
        w.registry.close()


def test_a_rollback_sent_to_one_worker_is_applied_by_the_other(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    assert a.serving() == b.serving() == [2]

    a.registry.load("wine", ["1"]).result()

    assert a.board.wait_until_applied(a.registry.overrides.generation(), timeout_s=10)
    assert b.serving() == [1]


def test_an_unload_sent_to_one_worker_unloads_everywhere_and_any_worker_index_says_so(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers

    b.registry.unload("wine").result()
    assert b.board.wait_until_applied(b.registry.overrides.generation(), timeout_s=10)

    assert a.serving() == [] and b.serving() == []
    merged = {s.version: s for s in a.board.merged(a.registry.index())}
    assert merged[2].state == "UNAVAILABLE" and "all 2 workers" in merged[2].reason


def test_the_merged_index_says_loading_while_the_workers_disagree(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    b.registry.close()  # b stops watching: it keeps serving version 2
    b.board.publish(b.registry.index(), 0)

    a.registry.unload("wine").result()
    time.sleep(0.2)

    merged = {s.version: s for s in a.board.merged(a.registry.index())}
    assert merged[2].state == "LOADING" and "converging" in merged[2].reason
    assert not a.board.wait_until_applied(a.registry.overrides.generation(), timeout_s=0.2)


def test_a_change_waits_for_a_worker_that_has_not_published_yet(tmp_path: Path) -> None:
    # Two workers expected; the second is still starting (no board yet): the first alone is not "all of them".
    import os

    put_version(tmp_path / "repo", "wine", 1, "w1")
    a = Worker(tmp_path / "repo", tmp_path / "state", os.getpid())
    a.board.expected = 2
    try:
        a.registry.unload("wine").result()
        generation = a.registry.overrides.generation()
        assert not a.board.wait_until_applied(generation, timeout_s=0.3)
        # The second worker starts, reads the overrides in force and publishes: now every one has applied it.
        b = Worker(tmp_path / "repo", tmp_path / "state", os.getppid())
        try:
            assert b.serving() == []
            assert a.board.wait_until_applied(generation, timeout_s=10)
        finally:
            b.registry.close()
    finally:
        a.registry.close()
