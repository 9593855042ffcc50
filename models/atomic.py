"""Atomic directory writes, torch-free (the artifact, the repository's versions and the Triton export use them).

A temporary sibling directory is filled and fsynced, then renamed into place, so a reader finds either the old
directory or the complete new one (docs/ARTIFACT.md, "Writing: atomic export").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def write_dir_atomically(out_dir: Path, files: dict[str, bytes]) -> None:
    """Replaces ``out_dir`` with a directory holding ``files`` (relative path -> bytes; ``a/b`` makes ``a``)
    in one rename: a reader sees the old directory or the complete new one, never a part."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a server running as another user must read it
        for fname, data in files.items():
            (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp / fname, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if out_dir.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        os.replace(tmp, out_dir)
        fsync_dir(out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            _restore_aside(old, out_dir)
        raise


def _restore_aside(old: Path, out_dir: Path) -> None:
    """Puts the artifact set aside in ``old`` back at ``out_dir`` if nothing replaced it; drops ``old``."""
    with contextlib.suppress(OSError):
        if not out_dir.exists():
            os.replace(old / out_dir.name, out_dir)
        old.rmdir()  # only once empty: never deletes the previous artifact


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
