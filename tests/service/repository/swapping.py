"""Helpers for the hot-swap tests: a repository of two differently trained versions, a real server process
on it, and a load generator whose every answer is checked against the version it names.

Under load, each answer says which version produced it (``version``, or the ``x-bnserve-version`` header
of a bulk answer); it must equal, within 1e-6, that version's unbatched, unfolded network on those rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import shutil
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from bench.check import Reference, check_answer, request_body, sample_rows
from bench.load import _read_response as read_response  # the one HTTP/1.1 response reader
from models import load_artifact

ADMIN_TOKEN = "s3cret-admin-token"


@dataclass
class Versions:
    """Each version's reference answers for the same pool of rows, and its weights' SHA-256."""

    rows: np.ndarray
    references: dict[str, Reference]
    sha256: dict[str, str]

    @classmethod
    def of(cls, model_dir: Path, numbers: list[int], pool: int = 300) -> Versions:
        artifacts = {str(n): load_artifact(model_dir / str(n)) for n in numbers}
        rows = sample_rows(next(iter(artifacts.values())), pool)
        return cls(
            rows,
            {v: Reference.from_artifact(a, rows) for v, a in artifacts.items()},
            {v: a.weights_sha256 for v, a in artifacts.items()},
        )


@dataclass
class Load:
    """What the load generator saw: answers per version, failures and wrong answers (each described)."""

    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.answers.values())


async def drive_until(port: int, versions: Versions, stop: asyncio.Event, *, connections: int = 16) -> Load:
    """Sends mixed requests (1 and 256 rows, JSON and bulk answers) on ``connections`` keep-alive
    connections until ``stop`` is set, checking every answer against the version it names."""
    load = Load()
    n = len(versions.rows)
    slices = [(i % n, i % n + 1) if i % 2 == 0 else (0, 256) for i in range(8)]
    requests = []
    for j, (a, b) in enumerate(itertools.islice(itertools.cycle(slices), 16)):
        body = request_body(versions.rows[a:b])
        bulk = j % 4 == 3
        accept = "Accept: application/octet-stream\r\n" if bulk else ""
        head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{accept}"
        requests.append((f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body, a, b))

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for k in itertools.count(offset):
                if stop.is_set():
                    return
                request, a, b = requests[k % len(requests)]
                writer.write(request)
                status, body, headers = await read_response(reader)
                if status != 200:
                    load.failures.append(f"HTTP {status}: {body[:300]!r}")
                    continue
                _check(load, versions, headers, body, a, b)
        except (OSError, asyncio.IncompleteReadError) as e:
            load.failures.append(f"connection failed: {type(e).__name__}: {e}")
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    return load


def _check(load: Load, versions: Versions, headers: dict[bytes, bytes], body: bytes, a: int, b: int) -> None:
    if b"x-bnserve-shape" in headers:
        version = headers.get(b"x-bnserve-version", b"?").decode()
        sha = headers.get(b"x-bnserve-artifact-sha256", b"?").decode()
        rows, k = (int(x) for x in headers[b"x-bnserve-shape"].split(b","))
        answer: object = np.frombuffer(body, dtype="<f4").reshape(rows, k)
    else:
        decoded = orjson.loads(body)
        version, sha, answer = str(decoded.get("version")), decoded.get("artifact_sha256"), decoded
    load.answers[version] += 1
    reference = versions.references.get(version)
    if reference is None or versions.sha256[version] != sha:
        load.wrong.append(f"an answer names version {version!r} with artifact {sha}")
        return
    problem = check_answer(answer, reference.expected[a:b], reference.class_labels)
    if problem is not None:
        load.wrong.append(f"version {version}: {problem}")


# ------------------------------------------------------------------------------------------ tampering


def copy_version(model_dir: Path, source: int, target: int) -> Path:
    """Copies a version under a hidden name, then renames it in: the server never sees it half-copied."""
    staging = model_dir / f".copy-{target}"
    shutil.copytree(model_dir / str(source), staging)
    return staging


def publish(staging: Path, target: int) -> Path:
    final = staging.parent / str(target)
    staging.rename(final)
    return final


def flip_weight_byte(version_dir: Path) -> None:
    path = version_dir / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x80
    path.write_bytes(bytes(data))


def change_running_var_and_reseal(version_dir: Path, layer: str = "bn1") -> None:
    """Doubles one BN layer's first running_var and updates both checksums, as a careful forger would."""
    path = version_dir / "weights.safetensors"
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    start, _ = orjson.loads(data[8 : 8 + header_len])[f"{layer}.running_var"]["data_offsets"]
    at = 8 + header_len + start
    (value,) = struct.unpack("<f", data[at : at + 4])
    data[at : at + 4] = struct.pack("<f", value * 2)
    path.write_bytes(bytes(data))
    manifest_path = version_dir / "manifest.json"
    manifest = orjson.loads(manifest_path.read_bytes())
    manifest["weights"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest_bytes = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    manifest_path.write_bytes(manifest_bytes)
    (version_dir / "manifest.sha256").write_text(
        f"{hashlib.sha256(manifest_bytes).hexdigest()}  manifest.json\n"
    )


def edit_manifest_eps(version_dir: Path) -> None:
    path = version_dir / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    next(s for s in manifest["layers"] if s["name"] == "bn1")["eps"] = 0.5
    path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def remove_weights(version_dir: Path) -> None:
    (version_dir / "weights.safetensors").unlink()


def wait_for(check, timeout_s: float = 60.0, interval_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return False
