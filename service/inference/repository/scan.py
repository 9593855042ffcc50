"""What a repository holds right now: its models, their version directories and policies, without reading
any file outside the repository.

    source = RepositorySource(Path("repo"))       # <repo>/<model>/<version>/ (models/repository.py)
    source = SingleArtifactSource(Path("artifacts/wine"))   # BNSERVE_MODEL_DIR: one model, version 1
    models = source.scan()                        # {"wine": ModelFiles(...)}

Every entry on the way to a file is checked with ``lstat`` first: a model, version or file that is a
symbolic link resolving outside the repository is reported as a problem of that version, and neither it
nor anything under it is read (not even its size). ``fingerprint`` (names, sizes, mtimes) tells the
registry when a version's files changed since it was loaded.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from models.repository import MODEL_CONFIG_FILE, MODEL_NAME, check_model_name, model_dirs, version_dirs
from service.inference.repository.policy import ModelConfig, VersionPolicy, parse_model_config

Fingerprint = tuple[tuple[str, int, int], ...]
SINGLE_VERSION = 1
_MAX_CONFIG_BYTES = 64 * 1024


@dataclass(frozen=True)
class VersionFiles:
    number: int
    path: Path
    fingerprint: Fingerprint = ()
    problem: str | None = None  # why this version cannot be loaded, found before reading it


@dataclass(frozen=True)
class ModelFiles:
    name: str
    versions: dict[int, VersionFiles] = field(default_factory=dict)
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    problem: str | None = None  # config.json is unreadable: the policy in force is kept


class Source(Protocol):
    def scan(self) -> dict[str, ModelFiles]: ...

    def describe(self) -> str: ...


class RepositorySource:
    """A model repository directory (Triton's layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return f"repository {self.root}"

    def scan(self) -> dict[str, ModelFiles]:
        return {name: self._model(name, path) for name, path in sorted(model_dirs(self.root).items())}

    def _model(self, name: str, path: Path) -> ModelFiles:
        if (outside := self._outside(path)) is not None:
            return ModelFiles(name, problem=outside)
        versions = {n: self._version(n, p) for n, p in sorted(version_dirs(path).items())}
        try:
            policy = self._config(path / MODEL_CONFIG_FILE).version_policy
        except ValueError as e:
            return ModelFiles(name, versions, problem=f"{name}/{MODEL_CONFIG_FILE}: {e}")
        return ModelFiles(name, versions, policy)

    def _version(self, number: int, path: Path) -> VersionFiles:
        if (outside := self._outside(path)) is not None:
            return VersionFiles(number, path, problem=outside)
        files = []
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            return VersionFiles(number, path, problem=f"{path}: cannot list the directory ({e.strerror})")
        for entry in entries:
            if (outside := self._outside(Path(entry.path))) is not None:
                return VersionFiles(number, path, problem=outside)
            st = entry.stat(follow_symlinks=False)
            files.append((entry.name, st.st_size, st.st_mtime_ns))
        return VersionFiles(number, path, tuple(files))

    def _config(self, path: Path) -> ModelConfig:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return ModelConfig()
        if (outside := self._outside(path)) is not None:
            raise ValueError(outside)
        if stat.S_ISLNK(st.st_mode):
            st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_CONFIG_BYTES:
            raise ValueError(f"expected a JSON file of at most {_MAX_CONFIG_BYTES} bytes")
        return parse_model_config(path.read_bytes())

    def _outside(self, path: Path) -> str | None:
        """Gives back why ``path`` must not be read when it is a link leading out of the repository."""
        if not path.is_symlink():
            return None
        target = path.resolve()
        if target.is_relative_to(self.root):
            return None
        return (
            f"{path.relative_to(self.root)} is a symbolic link to {target}, outside the repository "
            f"{self.root}: refused"
        )


class SingleArtifactSource:
    """One artifact directory (``BNSERVE_MODEL_DIR``) served as version 1 of a one-model repository, named
    ``name`` (``BNSERVE_MODEL_NAME``) or else by its manifest."""

    def __init__(self, path: Path, *, name: str | None = None) -> None:
        self.path = Path(path)
        if name is not None:
            self.name = check_model_name(name)  # a name the user chose: refused at startup when invalid
            return
        name = _manifest_name(self.path) or self.path.resolve().name
        self.name = name if MODEL_NAME.match(name) and ".." not in name else "model"

    def describe(self) -> str:
        return f"artifact {self.path}"

    def scan(self) -> dict[str, ModelFiles]:
        version = VersionFiles(SINGLE_VERSION, self.path, _fingerprint(self.path))
        return {self.name: ModelFiles(self.name, {SINGLE_VERSION: version})}


def _manifest_name(path: Path) -> str | None:
    """Gives back the manifest's ``name`` when it is a valid model name (the artifact is verified later)."""
    try:
        name = orjson.loads((path / "manifest.json").read_bytes()).get("name")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    return name if isinstance(name, str) and MODEL_NAME.match(name) and ".." not in name else None


def _fingerprint(path: Path) -> Fingerprint:
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
            return tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    except OSError:
        return ()
