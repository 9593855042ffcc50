"""The model repository layout: ``<repository>/<model>/<version>/``, each version an artifact directory.

    path = publish_version("repo", "wine", lambda d: save_artifact(d, ...))   # repo/wine/3, atomically
    versions = version_dirs(Path("repo/wine"))                                 # {1: repo/wine/1, 3: ...}
    check_model_name("wine"); parse_version("3")                               # RepositoryNameError if not

Triton's layout: a version is a positive integer written without leading zeros. Names starting with ``.``
are never models or versions, which is where a version is built before it is renamed into place.
docs/REPOSITORY.md is the reference; training writes here and the service reads here, so both use this.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from models.atomic import fsync_dir
from models.errors import RepositoryNameError

MODEL_CONFIG_FILE = "config.json"  # optional, beside the versions: {"version_policy": ...}
MODEL_NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"  # also in the OpenAPI schema
VERSION_PATTERN = r"^[1-9][0-9]{0,17}$"
MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
VERSION = re.compile(VERSION_PATTERN)
_PUBLISH_ATTEMPTS = 1000  # concurrent writers each take the next free number; this bounds the retries


def check_model_name(name: str) -> str:
    """Gives back ``name`` when it can name a model directory: one path component, no ``..``."""
    if not MODEL_NAME.fullmatch(name):
        raise RepositoryNameError(
            f"model name {name!r} is not valid: expected 1-128 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit, without '..' or path separators"
        )
    return name


def parse_version(text: str) -> int:
    """Gives back the version number ``text`` names: a positive integer without leading zeros."""
    if not VERSION.fullmatch(text):
        raise RepositoryNameError(
            f"version {text!r} is not valid: expected a positive integer without leading zeros, like 1 or 12"
        )
    return int(text)


def model_dirs(root: Path) -> dict[str, Path]:
    """Gives back every model directory in the repository ``root`` by name (entries with invalid names are
    not models and are skipped)."""
    return {
        entry.name: Path(entry.path)
        for entry in _entries(root)
        if entry.is_dir() and MODEL_NAME.match(entry.name) and ".." not in entry.name
    }


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """Gives back every version directory of a model by number."""
    return {int(entry.name): Path(entry.path) for entry in _entries(model_dir) if _is_version(entry)}


def _is_version(entry: os.DirEntry[str]) -> bool:
    return bool(VERSION.match(entry.name)) and entry.is_dir()


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def publish_version(repository: str | Path, name: str, write: Callable[[Path], object]) -> Path:
    """Gives back ``<repository>/<name>/<N>``, N one more than the highest version there, holding what
    ``write(directory)`` wrote.

    ``write`` fills a directory hidden from readers (its name starts with ``.``); that directory is then
    renamed to the version number in one step, so a reader polling the model directory sees either no new
    version or a complete one. rename(2) refuses to replace a non-empty directory, so a writer that lost
    the race for a number to another writer takes the next one: two writers never share a number.
    """
    model_dir = Path(repository) / check_model_name(name)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        built = staging / "version"
        write(built)
        for _ in range(_PUBLISH_ATTEMPTS):
            target = model_dir / str(_next_version(model_dir))
            try:
                os.rename(built, target)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    continue  # another writer took this number first
                raise
            fsync_dir(model_dir)
            return target
        raise RepositoryNameError(f"{model_dir}: no free version number after {_PUBLISH_ATTEMPTS} attempts")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _next_version(model_dir: Path) -> int:
    """Gives back one more than the highest number taken, by a directory or by anything else so named."""
    taken = [int(entry.name) for entry in _entries(model_dir) if VERSION.match(entry.name)]
    return max(taken, default=0) + 1
