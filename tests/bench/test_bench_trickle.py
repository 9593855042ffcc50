"""What the benchmark's checking trickle sends beside wrk's load, over a real socket: beside a one-row load,
distinct JSON requests of 1 to 8 rows (batched with it); beside a large-request load, that load's own
requests, JSON or raw float32, so the bulk measurement is not turned into a mixed load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bench.check import Reference, request_body, sample_rows
from bench.serve import Bench, Load, get_args_parser
from models.artifact import load_artifact

Seen = list[tuple[str, bytes]]  # (content-type, body) of each request, in order


async def _recording_server(seen: Seen) -> asyncio.Server:
    """An HTTP/1.1 keep-alive server that records each POST and answers 200 with an empty JSON object."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(
                    line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ":" in line
                )
                fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                seen.append((fields.get("content-type", ""), body))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _trickle(bench: Bench, load: Load) -> Seen:
    async def run() -> Seen:
        seen: Seen = []
        server = await _recording_server(seen)
        port = server.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        task = asyncio.create_task(bench._trickle(port, stop, load))
        await asyncio.sleep(0.3)  # ~30 requests, 10 ms apart
        stop.set()
        await task
        server.close()
        await server.wait_closed()
        return seen

    return asyncio.run(run())


@pytest.fixture(scope="module")
def bench(breast_cancer_artifact: Path) -> Bench:
    artifact = load_artifact(breast_cancer_artifact)
    args = get_args_parser().parse_args(["--model", str(breast_cancer_artifact), "--big-rows", "64"])
    return Bench(args, artifact, Reference.from_artifact(artifact, sample_rows(artifact, 256)))


def test_beside_a_float32_bulk_load_the_trickle_sends_that_loads_own_requests(bench: Bench) -> None:
    load = Load(4, 64, float32=True)
    seen = _trickle(bench, load)
    assert len(seen) >= 5
    own = {item.body for item in bench.items(load)}
    assert all(ctype == "application/octet-stream" for ctype, _ in seen)
    assert all(body in own for _, body in seen)
    rows = np.frombuffer(seen[0][1], dtype="<f4").reshape(64, -1)  # 64 rows of raw float32, not 1 to 8
    assert rows.shape[1] == bench.reference.rows.shape[1]


def test_beside_a_json_bulk_load_the_trickle_sends_that_loads_own_json(bench: Bench) -> None:
    load = Load(4, 64)
    seen = _trickle(bench, load)
    own = {item.body for item in bench.items(load)}
    assert len(seen) >= 5
    assert all(ctype == "application/json" and body in own for ctype, body in seen)


def test_beside_a_one_row_load_the_trickle_sends_small_distinct_json_requests(bench: Bench) -> None:
    seen = _trickle(bench, Load(16, 1))
    assert len(seen) >= 5
    assert all(ctype == "application/json" for ctype, _ in seen)
    ref = bench.reference.rows
    sizes = set()
    for _, body in seen:
        # Each body is one of the 1-to-8-row requests cut from the reference pool.
        for size in range(1, 9):
            if any(body == request_body(ref[i : i + size]) for i in range(len(ref) - size + 1)):
                sizes.add(size)
                break
        else:
            pytest.fail(f"a trickle request is not 1 to 8 rows of the reference pool: {body[:80]!r}")
    assert len(sizes) > 1  # mixed sizes, not one fixed body
