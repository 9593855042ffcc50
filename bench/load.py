"""Load generators: wrk when it is installed, else a built-in one on asyncio streams (keep-alive HTTP/1.1).

result = await drive_wrk(url, body, concurrency=16, seconds=10)
result = await drive(host, port, items, concurrency=16, seconds=10, check=checker)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

# Counts non-200 answers in every wrk thread and prints one line the benchmark parses.
WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
if os.getenv("BENCH_ACCEPT") ~= "" then wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT") end
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) responses = 0; non200 = 0 end
function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then non200 = non200 + 1 end
end
function done(summary, latency, requests)
  local n, bad = 0, 0
  for _, t in ipairs(threads) do n = n + t:get("responses"); bad = bad + t:get("non200") end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "responses": %d, "non200": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, n, bad, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def free_port(count: int = 1) -> int:
    """Gives back a TCP port on 127.0.0.1 that nothing listens on now (the tests use it too); with ``count``,
    the first of that many consecutive free ones (TorchServe listens on its port and the five after it)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if count == 1 or all(_bindable(port + i) for i in range(1, count)):
            return port
    raise RuntimeError(f"found no {count} consecutive free ports on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int = 0  # non-200 answers and socket errors
    problems: list[str] = field(default_factory=list)  # wrong answers, as check_answer words them

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Item:
    """One request the generator can send, and what a correct answer holds (None: not checked)."""

    body: bytes
    expected: np.ndarray | None = None
    headers: dict[str, str] = field(default_factory=dict)


Checker = Callable[[object, np.ndarray], "str | None"]


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


async def drive_wrk(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    cpus: Sequence[int] | None = None,
    content_type: str = "application/json",
    accept: str = "",
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Gives back what wrk measured for ``seconds`` of POSTs of ``body`` from ``concurrency`` connections."""
    with tempfile.TemporaryDirectory(prefix="bnserve-bench-") as tmp:
        script, body_file = Path(tmp, "post.lua"), Path(tmp, "body.json")
        script.write_text(WRK_SCRIPT)
        body_file.write_bytes(body)
        cmd = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        if cpus and shutil.which("taskset"):
            cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            env={
                **os.environ,
                "BENCH_BODY": str(body_file),
                "BENCH_CONTENT_TYPE": content_type,
                "BENCH_ACCEPT": accept,
                "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{text}")
    r = orjson.loads(line.removeprefix("BENCH "))
    return LoadResult(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        failures=r["non200"] + r["socket_errors"],
    )


async def drive(
    host: str,
    port: int,
    items: Sequence[Item],
    *,
    concurrency: int,
    seconds: float | None = None,
    total: int | None = None,
    check: Checker | None = None,
    pause: float = 0.0,
    stop: asyncio.Event | None = None,
    content_type: str = "application/json",
    accept: str = "",
    path: str = "/predict",
) -> LoadResult:
    """Gives back the load result of ``concurrency`` keep-alive connections cycling through ``items``.

    Runs for ``seconds``, for ``total`` requests, or until ``stop`` is set; every answer whose item has
    an ``expected`` is passed to ``check``, decoded: a JSON answer as JSON, a bulk answer
    (``Accept: application/octet-stream``) as the float32 array it holds, an Open Inference Protocol answer
    with binary tensors as ``decode_answer`` says. ``pause`` sleeps between a connection's requests (a
    trickle). An item's ``headers`` are sent with it (``Inference-Header-Content-Length``).
    """
    accept_line = f"Accept: {accept}\r\n" if accept else ""
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n{accept_line}"
            + "".join(f"{k}: {v}\r\n" for k, v in item.headers.items())
            + f"Content-Length: {len(item.body)}\r\n\r\n"
        ).encode()
        + item.body
        for item in items
    ]
    expectations = [item.expected for item in items]
    order = itertools.cycle(range(len(requests)))
    latencies: list[float] = []
    problems: list[str] = []
    failures = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else float("inf")
    remaining = [total if total is not None else -1]

    def more() -> bool:
        if stop is not None and stop.is_set():
            return False
        if remaining[0] == 0 or time.perf_counter() >= deadline:
            return False
        remaining[0] -= 1
        return True

    async def connection() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while more():
                i = next(order)
                request, expected = requests[i], expectations[i]
                t0 = time.perf_counter()
                writer.write(request)
                status, body, headers = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    failures += 1
                    if len(problems) < 5:
                        problems.append(f"HTTP {status}: {body[:200]!r}")
                elif expected is not None and check is not None:
                    problem = check(decode_answer(body, headers), expected)
                    if problem is not None and len(problems) < 5:
                        problems.append(problem)
                    failures += problem is not None
                if pause:
                    await asyncio.sleep(pause)
        except (OSError, asyncio.IncompleteReadError) as e:
            failures += 1
            problems.append(f"connection failed: {type(e).__name__}: {e}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
        failures=failures,
        problems=problems,
    )


def decode_answer(body: bytes, headers: dict[bytes, bytes]) -> object:
    """Gives back an answer decoded: the /predict bulk answer (its ``x-bnserve-shape`` given) as a float32
    array of that shape; an Open Inference Protocol answer with binary tensors (its
    ``inference-header-content-length`` given) as its JSON with each binary output's ``data`` filled in (FP32
    as a float32 array, BYTES as a list of strings); any other as JSON."""
    if (shape := headers.get(b"x-bnserve-shape")) is not None:
        rows, k = (int(n) for n in shape.split(b","))
        return np.frombuffer(body, dtype="<f4").reshape(rows, k)
    if (length := headers.get(b"inference-header-content-length")) is None:
        return orjson.loads(body)
    n = int(length)
    answer = orjson.loads(body[:n])
    offset = n
    for output in answer.get("outputs", []):
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        raw = body[offset : offset + size]
        offset += size
        output["data"] = _bytes_elements(raw) if output["datatype"] == "BYTES" else np.frombuffer(raw, "<f4")
    return answer


def _bytes_elements(raw: bytes) -> list[str]:
    """Gives back the elements of a binary BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    out, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i : i + 4], "little")
        out.append(raw[i + 4 : i + 4 + n].decode())
        i += 4 + n
    return out


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, dict[bytes, bytes]]:
    """Gives back the status, the body and the headers (names in lower case)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, await reader.readexactly(int(headers.get(b"content-length", 0))), headers
