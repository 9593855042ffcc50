"""A fake version loader for the registry's tests: a version directory holds ``weights.txt`` (its value)
and optionally ``bad`` (the loader refuses it); no torch, so the tests exercise only the registry."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeVersion:
    model: str
    version: int
    value: str
    closed: bool = False

    @property
    def artifact_sha256(self) -> str:
        return hashlib.sha256(self.value.encode()).hexdigest()

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeLoader:
    loaded: list[FakeVersion] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    gate: threading.Event | None = None  # when set, each load waits for it

    def __call__(self, model: str, version: int, path: Path) -> FakeVersion:
        self.threads.append(threading.current_thread().name)
        if self.gate is not None:
            assert self.gate.wait(10)
        if (path / "bad").exists():
            raise ValueError((path / "bad").read_text())
        loaded = FakeVersion(model, version, (path / "weights.txt").read_text())
        self.loaded.append(loaded)
        return loaded


def put_version(root: Path, model: str, version: int, value: str, *, bad: str | None = None) -> Path:
    path = root / model / str(version)
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.txt").write_text(value)
    if bad is not None:
        (path / "bad").write_text(bad)
    return path
