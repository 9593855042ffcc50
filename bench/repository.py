"""Benchmark the model repository on the default 30-256-256-2 MLP: swap latency, new version to first
answer with polling, memory over load/unload cycles, memory per loaded version.

    python -m bench.repository            # what docs/PERFORMANCE.md reports
    python -m bench.repository --quick    # fewer repetitions: a smoke test

One server process (``python -m service``) serves a repository of copies of the benchmark artifact. Its
resident memory is read from /proc/<pid>/status (VmRSS), so this runs on Linux.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/repository.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.check import request_body, sample_rows
from bench.load import Item, LoadResult, drive
from bench.serve import DEFAULT_MODEL, HOST, LOG_DIR, ROOT, ensure_artifact, free_port
from models import Artifact

TOKEN = "bench-admin-token"
MODEL = "mlp"
TARGETS = {"poll_to_answer_s": 3.0, "rss_growth_mb": 20.0, "per_version_mb": 10.0}


class Server:
    def __init__(self, port: int, pid: int) -> None:
        self.url, self.port, self.pid = f"http://{HOST}:{port}", port, pid

    def call(self, method: str, path: str, body: Any = None, *, admin: bool = False) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"}
        if admin:
            headers["Authorization"] = f"Bearer {TOKEN}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def serving_version(self, row: list[float | bool | str | None]) -> str:
        status, answer = self.call("POST", "/predict", {"instances": [row]})
        return str(answer.get("version")) if status == 200 else ""


@contextlib.contextmanager
def serving(repo: Path, **env: str) -> Iterator[Server]:
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BNSERVE_")},
        "BNSERVE_REPOSITORY": str(repo),
        "BNSERVE_ADMIN_TOKEN": TOKEN,
        "BNSERVE_LOG_LEVEL": "warning",
        **env,
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / "repository.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port)], cwd=ROOT, env=environment, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(port, proc.pid)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if server.call("GET", "/readyz")[0] == 200:
                    break
            if proc.poll() is not None:
                raise SystemExit(f"the server exited; see {LOG_DIR / 'repository.log'}")
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def make_repository(root: Path, artifact: Path, versions: int, *, policy: str | None = None) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    for n in range(1, versions + 1):
        shutil.copytree(artifact, root / MODEL / str(n))
    if policy is not None:
        (root / MODEL / "config.json").write_text(policy)
    return root


def add_version(repo: Path, artifact: Path, number: int) -> None:
    """Copies the artifact in under a hidden name, then renames it: it appears complete, in one step."""
    staging = repo / MODEL / f".incoming-{number}"
    shutil.copytree(artifact, staging)
    staging.rename(repo / MODEL / str(number))


def swap_latency(server: Server, swaps: int) -> list[float]:
    """Gives back the seconds of each POST .../load that swaps the serving version (load, verify, warm
    up, switch), alternating between versions 1 and 2."""
    seconds = []
    for i in range(swaps):
        start = time.perf_counter()
        status, answer = server.call(
            "POST",
            f"/v2/repository/models/{MODEL}/load",
            {"parameters": {"version": str(1 + i % 2)}},
            admin=True,
        )
        seconds.append(time.perf_counter() - start)
        assert status == 200, answer
    return seconds


def swap_under_load(server: Server, port: int, artifact: Artifact, swaps: int) -> dict[str, Any]:
    """Gives back the swap latency while 16 connections send one-row and 256-row requests, and what those
    requests saw (failures, p50 and p99 latency); then the same load with no swaps, for comparison."""
    rows = sample_rows(artifact, 256)
    items = [Item(request_body(rows[:1])), Item(request_body(rows))]

    def run_load(during: Callable[[], Any]) -> tuple[Any, LoadResult]:
        loop, stop = asyncio.new_event_loop(), asyncio.Event()
        box: list[LoadResult] = []
        worker = threading.Thread(
            target=lambda: box.append(
                loop.run_until_complete(drive(HOST, port, items, concurrency=16, stop=stop))
            )
        )
        worker.start()
        time.sleep(0.5)
        try:
            result = during()
        finally:
            loop.call_soon_threadsafe(stop.set)
            worker.join()
        return result, box[0]

    seconds, swapping = run_load(lambda: swap_latency(server, swaps))
    _, quiet = run_load(lambda: time.sleep(sum(seconds)))
    return {
        "swap_s": {"median": statistics.median(seconds), "max": max(seconds), "n": len(seconds)},
        "during_swaps": {"requests": swapping.requests, "failures": swapping.failures, "p50_ms": swapping.p50_ms, "p99_ms": swapping.p99_ms},
        "no_swaps": {"requests": quiet.requests, "failures": quiet.failures, "p50_ms": quiet.p50_ms, "p99_ms": quiet.p99_ms},
    }  # fmt: skip


def poll_to_answer(
    server: Server, repo: Path, artifact: Path, row: list[float | bool | str | None], first: int, times: int
) -> list[float]:
    """Gives back, for each new version directory, the seconds from its rename into the repository to
    the first /predict answer it gives."""
    seconds = []
    for number in range(first, first + times):
        add_version(repo, artifact, number)
        start = time.perf_counter()
        while server.serving_version(row) != str(number):
            if time.perf_counter() - start > 30:
                raise SystemExit(f"version {number} did not answer within 30 s")
            time.sleep(0.005)
        seconds.append(time.perf_counter() - start)
    return seconds


def load_unload_rss(server: Server, cycles: int) -> tuple[float, float]:
    """Gives back the resident memory (MB) before and after ``cycles`` unload + load cycles."""
    for _ in range(3):  # let allocator pools and caches settle first
        server.call("POST", f"/v2/repository/models/{MODEL}/unload", {}, admin=True)
        server.call("POST", f"/v2/repository/models/{MODEL}/load", {}, admin=True)
    before = server.rss_mb()
    for _ in range(cycles):
        assert server.call("POST", f"/v2/repository/models/{MODEL}/unload", {}, admin=True)[0] == 200
        assert server.call("POST", f"/v2/repository/models/{MODEL}/load", {}, admin=True)[0] == 200
    return before, server.rss_mb()


def per_version_rss(server: Server, versions: int) -> tuple[float, float]:
    """Gives back the resident memory (MB) with one version loaded, and with ``versions`` loaded."""
    one = {"parameters": {"version": "1"}}
    server.call("POST", f"/v2/repository/models/{MODEL}/load", one, admin=True)
    single = server.rss_mb()
    every = {"parameters": {"versions": [str(n) for n in range(1, versions + 1)]}}
    status, answer = server.call("POST", f"/v2/repository/models/{MODEL}/load", every, admin=True)
    assert status == 200, answer
    return single, server.rss_mb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.repository", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="artifact (trained there if missing)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    artifact_dir = Path(args.model)
    artifact = ensure_artifact(artifact_dir)
    row = artifact.manifest.canary.inputs[0]
    swaps, polls, cycles, extra = (4, 2, 5, 2) if args.quick else (20, 5, 50, 8)
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bnserve-repo-bench-") as tmp:
        repo = make_repository(Path(tmp) / "repo", artifact_dir, 2)
        with serving(repo, BNSERVE_REPOSITORY_POLL_S="1") as server:
            s = swap_latency(server, swaps)
            results["swap_s"] = {"median": statistics.median(s), "max": max(s), "n": len(s)}
            results["under_load"] = swap_under_load(server, server.port, artifact, swaps)
            server.call("POST", f"/v2/repository/models/{MODEL}/load", {}, admin=True)  # the policy again
            p = poll_to_answer(server, repo, artifact_dir, row, 3, polls)
            results["poll_to_answer_s"] = {"median": statistics.median(p), "max": max(p), "n": len(p)}
            before, after = load_unload_rss(server, cycles)
            results["rss_mb"] = {"before": before, "after": after, "growth": after - before, "cycles": cycles}
        repo = make_repository(Path(tmp) / "repo", artifact_dir, 1 + extra)
        with serving(repo) as server:
            single, loaded = per_version_rss(server, 1 + extra)
            results["per_version_mb"] = {
                "one": single,
                "all": loaded,
                "each": (loaded - single) / extra,
                "extra": extra,
            }
    print_report(results)
    return 0


def print_report(r: dict[str, Any]) -> None:
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
    u = r["under_load"]
    rows = [
        ("swap (POST load: load, verify, warm up, switch)", f"{r['swap_s']['median'] * 1000:.0f} ms median, {r['swap_s']['max'] * 1000:.0f} ms max", ""),
        ("swap under load (16 connections, 1 and 256 rows)", f"{u['swap_s']['median'] * 1000:.0f} ms median, {u['swap_s']['max'] * 1000:.0f} ms max", ""),
        ("requests during the swaps: failed, p50, p99", f"{u['during_swaps']['failures']} of {u['during_swaps']['requests']}, {u['during_swaps']['p50_ms']:.1f} ms, {u['during_swaps']['p99_ms']:.1f} ms", "0 failed"),
        ("the same load without swaps: failed, p50, p99", f"{u['no_swaps']['failures']} of {u['no_swaps']['requests']}, {u['no_swaps']['p50_ms']:.1f} ms, {u['no_swaps']['p99_ms']:.1f} ms", ""),
        ("new version directory -> first answer, polling 1 s", f"{r['poll_to_answer_s']['median']:.2f} s median, {r['poll_to_answer_s']['max']:.2f} s max", f"< {TARGETS['poll_to_answer_s']} s"),
        (f"RSS growth over {r['rss_mb']['cycles']} unload/load cycles", f"{r['rss_mb']['growth']:+.1f} MB ({r['rss_mb']['before']:.0f} -> {r['rss_mb']['after']:.0f})", f"< {TARGETS['rss_growth_mb']} MB"),
        (f"RSS per extra loaded version ({r['per_version_mb']['extra']} extra)", f"{r['per_version_mb']['each']:.1f} MB", f"< {TARGETS['per_version_mb']} MB"),
    ]  # fmt: skip
    print("| measure | result | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    sys.exit(main())
