"""Several worker processes, one set of loaded versions: the load/unload requests in force and what each
worker serves live in a directory they share (``BNSERVE_REPOSITORY_STATE_DIR``).

    overrides = SharedOverrides(state_dir)          # a load/unload answered by any worker changes all of them
    board = WorkerBoard(state_dir)                  # each worker publishes its index after every change
    board.publish(registry.index(), generation)     # registry.applied_generation
    board.merged(registry.index())                  # the index across the live workers
    board.wait_until_applied(generation, timeout_s=30)

Files are replaced atomically (written beside, then renamed), and read-modify-write of the overrides holds
an ``flock``, so two admin requests to two workers never lose one another's change. Each worker watches the
overrides' generation (registry polling) and reapplies when it moves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from service.inference.repository.registry import Override, VersionStatus

_OVERRIDES = "overrides.json"
_WORKERS = "workers"


class SharedOverrides:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        (self.dir / _WORKERS).mkdir(parents=True, exist_ok=True)
        self._path = self.dir / _OVERRIDES
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def get(self, model: str) -> Override | None:
        value: Override | None = self._read()["overrides"].get(model)
        return value

    def set(self, model: str, value: Override | None) -> None:
        with self._locked():
            state = self._read()
            overrides = dict(state["overrides"])
            if value is None:
                overrides.pop(model, None)
            else:
                overrides[model] = value
            _write_atomically(self._path, {"generation": state["generation"] + 1, "overrides": overrides})

    def generation(self) -> int:
        return int(self._read()["generation"])

    def _read(self) -> dict[str, Any]:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return {"generation": 0, "overrides": {}}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # every write is a new file (a rename): a new inode
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, orjson.loads(self._path.read_bytes()))
        return self._cache[1]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / "overrides.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


class WorkerBoard:
    """Each live worker's index and the overrides generation it has applied."""

    def __init__(self, state_dir: Path, *, pid: int | None = None, expected: int = 1) -> None:
        self.dir = Path(state_dir) / _WORKERS
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pid = pid if pid is not None else os.getpid()
        self.expected = expected  # workers there should be (BNSERVE_WORKERS): a change waits for them all

    def publish(self, index: list[VersionStatus], generation: int) -> None:
        entries = [
            {
                "model": s.model,
                "version": s.version,
                "state": s.state,
                "reason": s.reason,
                "artifact_sha256": s.artifact_sha256,
            }
            for s in index
        ]
        _write_atomically(
            self.dir / f"{self.pid}.json", {"pid": self.pid, "generation": generation, "index": entries}
        )

    def withdraw(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / f"{self.pid}.json").unlink()

    def workers(self) -> dict[int, dict[str, Any]]:
        """Gives back what each live worker published, by pid (files of workers that died are skipped)."""
        out = {}
        for path in self.dir.glob("*.json"):
            try:
                board = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # being replaced, or left half-written by a worker that was killed
            pid = int(board.get("pid", 0))
            if pid == self.pid or _alive(pid):
                out[pid] = board
        return out

    def merged(self, own: list[VersionStatus]) -> list[VersionStatus]:
        """Gives back the index across the live workers: a state where they agree, LOADING (with who is
        where) while they do not."""
        seen: dict[tuple[str, int], dict[int, VersionStatus]] = {}
        for pid, board in self.workers().items():
            if pid == self.pid:
                continue
            for e in board["index"]:
                status = VersionStatus(
                    e["model"], e["version"], e["state"], e["reason"], e["artifact_sha256"]
                )
                seen.setdefault((status.model, status.version), {})[pid] = status
        for status in own:
            seen.setdefault((status.model, status.version), {})[self.pid] = status
        return [_agree(model, version, by_pid) for (model, version), by_pid in sorted(seen.items())]

    def wait_until_applied(self, generation: int, *, timeout_s: float) -> bool:
        """Gives back whether ``expected`` live workers, at least, have published and every one of them
        applied ``generation``, within ``timeout_s`` seconds. A worker that has not published yet (still
        starting) counts as not applied: it would otherwise answer with what it loads first."""
        deadline = time.monotonic() + timeout_s
        while True:
            boards = self.workers()
            applied = all(b.get("generation", 0) >= generation for b in boards.values())
            if applied and len(boards) >= self.expected:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def _agree(model: str, version: int, by_pid: dict[int, VersionStatus]) -> VersionStatus:
    states = {s.state for s in by_pid.values()}
    first = next(iter(by_pid.values()))
    if len(states) == 1:
        sha = next((s.artifact_sha256 for s in by_pid.values() if s.artifact_sha256), None)
        reason = first.reason if len(by_pid) == 1 else f"{first.reason} (all {len(by_pid)} workers)"
        return VersionStatus(model, version, first.state, reason, sha)
    where = "; ".join(
        f"{state} on worker(s) {sorted(p for p, s in by_pid.items() if s.state == state)}"
        for state in sorted(states)
    )
    return VersionStatus(model, version, "LOADING", f"the workers are converging: {where}")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)
