"""Benchmark bnserve (torch and lean runtimes) against a tutorial-style service, TorchServe, and the HTTP
limits: a bare FastAPI endpoint and a raw ASGI one (no framework), on the same artifact; and against the
minimal model server (bench/minimal.py: raw ASGI, batching, the numpy forward, orjson, nothing else), the
limit for a model served from Python on this stack.

    python -m bench.serve                          # one run; trains the default artifact the first time
    python -m bench.serve --quick                  # short durations: a smoke test of the whole benchmark
    python -m bench.serve --runs 3 --json out.json # medians of 3 runs (what docs/PERFORMANCE.md reports)
    python -m bench.serve --model artifacts/breast_cancer --load builtin
    python -m bench.serve --services bnserve,bnserve-lean,raw --concurrency 16

TorchServe (dynamic batching, batch sizes 1, 8 and 16; the best counts) runs when ``torchserve``,
``torch-model-archiver`` and Java 17 are installed, and is skipped with a message otherwise.

Each service runs as one uvicorn worker pinned to CPU 0; the load generator (wrk if installed, else the
built-in asyncio one) runs on the other CPUs. Every answer the benchmark checks must match the unbatched,
unfolded network within 1e-6; any mismatch makes the run fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/serve.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson
import torch

from bench import torchserve
from bench.check import Reference, check_answer, print_checked, request_body, sample_rows
from bench.load import Item, LoadResult, drive, drive_wrk, free_port, have_wrk
from models import Artifact, ArtifactError, fold_batchnorm, load_artifact
from models.lean import fold, load_lean_artifact
from service.inference.tuning import keep_freed_memory, use_blas_threads

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path(tempfile.gettempdir()) / "bnserve-bench" / "breast_cancer-256-256"
HOST = "127.0.0.1"
LOG_DIR = (
    Path(tempfile.gettempdir()) / "bnserve-bench" / "logs"
)  # each server's output, kept for a look after


@dataclass(frozen=True)
class Service:
    name: str
    module: str  # run as ``python -m <module>``
    checked: bool  # its answers are compared with the reference
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()
    ready_path: str = "/readyz"
    predict_path: str = "/predict"
    # An idle server of this kind takes no CPU, so it can wait while the others are measured. TorchServe's
    # Java frontend does not (its idle threads cost bnserve-lean up to 45% of its requests/s on a shared
    # core): it is started for its own measurements only.
    quiet_when_idle: bool = True
    # Seconds of load before each measurement, at least: a JVM compiles its hot paths during the first
    # seconds of traffic (TorchServe's p99 was 0.5 s after the 1 s warm-up of --quick).
    min_warmup_s: float = 0.0
    ports: int = 1  # consecutive ports it listens on, from the one it is given

    def command(self, model: Path, port: int) -> list[str]:
        args = [sys.executable, "-m", self.module, "--port", str(port), *self.args]
        if self.module in ("bench.bare", "bench.raw"):
            return args
        args += ["--model", str(model)]
        return [*args, "--log-level", "warning"] if self.module == "service" else args

    @property
    def runtime(self) -> str | None:
        """bnserve's runtime (``torch`` or ``lean``); None for the reference services."""
        return dict(self.env).get("BNSERVE_RUNTIME", "torch") if self.module == "service" else None


def _torchserve(batch: int) -> Service:
    return Service(
        f"torchserve-b{batch}",
        "bench.torchserve",
        checked=False,
        args=("--batch-size", str(batch)),
        ready_path=torchserve.READY_PATH,
        predict_path=torchserve.PREDICT_PATH,
        quiet_when_idle=False,
        min_warmup_s=5.0,
        ports=6,  # inference, management, metrics, two gRPC ports and the first worker's (bench/torchserve.py)
    )


SERVICES = (
    Service("bnserve", "service", checked=True, env=(("BNSERVE_DRIFT_ENABLED", "true"),)),
    Service(
        "bnserve-lean",
        "service",
        checked=True,
        env=(("BNSERVE_RUNTIME", "lean"), ("BNSERVE_DRIFT_ENABLED", "true")),
    ),
    Service("bnserve-monitor-off", "service", checked=True, env=(("BNSERVE_DRIFT_ENABLED", "false"),)),
    Service(
        "bnserve-lean-monitor-off",
        "service",
        checked=True,
        env=(("BNSERVE_RUNTIME", "lean"), ("BNSERVE_DRIFT_ENABLED", "false")),
    ),
    Service(  # the lean service without the protocol fast path: every request through uvicorn's ASGI path
        "bnserve-lean-asgi",
        "service",
        checked=True,
        env=(
            ("BNSERVE_RUNTIME", "lean"),
            ("BNSERVE_DRIFT_ENABLED", "true"),
            ("BNSERVE_HTTP_FAST_PATH", "false"),
        ),
    ),
    Service("naive", "bench.naive", checked=True),
    Service("bare", "bench.bare", checked=False),
    Service("raw", "bench.raw", checked=False),
    Service("minimal", "bench.minimal", checked=True),
    *(_torchserve(b) for b in (1, 8, 16)),
)
BNSERVE = ("bnserve", "bnserve-lean")  # the variants the ratios are given for
MONITOR_OFF = {
    "bnserve": "bnserve-monitor-off",
    "bnserve-lean": "bnserve-lean-monitor-off",
}  # the same, drift off
MINIMAL = "minimal"  # the least model server (bench/minimal.py): its ratios are the limit for a served model


@dataclass(frozen=True)
class Load:
    concurrency: int
    rows: int  # per request
    # bnserve's bulk path instead of JSON (bnserve only): raw float32 rows in (Content-Type) and the
    # raw float32 answer out (Accept), both application/octet-stream
    float32: bool = False

    @property
    def name(self) -> str:
        bulk = " float32 in/out" if self.float32 else ""
        return f"{self.rows} row{'s' if self.rows > 1 else ''} x c{self.concurrency}{bulk}"

    @property
    def content_type(self) -> str:
        return "application/octet-stream" if self.float32 else "application/json"

    @property
    def large(self) -> bool:
        """More than one row per request: the checking trickle beside it sends this load's own requests
        (``Bench._trickle``), and their answers count in its rate (``Bench._measure``)."""
        return self.rows > 1

    @property
    def accept(self) -> str:
        return "application/octet-stream" if self.float32 else ""


@dataclass
class Measurement:
    service: str
    load: str
    rows: int
    concurrency: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    checked: int = 0  # answers compared with the reference during this load (besides the bursts)


@dataclass
class RunResult:
    forward: dict[str, float]  # in-process forward, rows/s, keyed like "unfolded_b1", "lean_folded_b1024"
    startup_s: dict[str, float] = field(default_factory=dict)
    idle_rss_mb: dict[str, float] = field(default_factory=dict)  # resident memory once ready, before any load
    device: dict[str, str] = field(default_factory=dict)  # where each bnserve variant ran its forwards
    measurements: list[Measurement] = field(default_factory=list)
    checked: int = 0  # answers compared with the reference in this run
    problems: list[str] = field(default_factory=list)
    reference_failures: list[str] = field(default_factory=list)  # of services whose answers are not checked


# ---------------------------------------------------------------------------------------------- setup


def ensure_artifact(path: Path) -> Artifact:
    """Gives back the artifact at ``path``, training the default 30-256-256-2 breast_cancer MLP there first."""
    with contextlib.suppress(ArtifactError):
        return load_artifact(path)
    print(f"training the benchmark artifact into {path} ...", flush=True)
    cmd = [sys.executable, "-m", "training", "--dataset", "breast_cancer", "--hidden", "256,256"]
    done = subprocess.run(
        [*cmd, "--out", str(path), "--no-progress"], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"could not train the benchmark artifact:\n{done.stdout}{done.stderr}")
    return load_artifact(path)


def _lean_served(artifact_dir: Path) -> Any:
    from service.inference.lean import load_lean
    from service.monitoring.drift import drift_monitor_for
    from service.settings import Settings

    settings = Settings(model_dir=artifact_dir, runtime="lean", drift_enabled=True)
    return load_lean(settings, drift_monitor_for(settings), artifact_dir).runtime.forward


def measure_forward(artifact: Artifact, rows: np.ndarray, *, cpus: set[int] | None) -> dict[str, float]:
    """Gives back the in-process forward rate (rows/s, one thread) at batch 1 and the big batch: torch's,
    unfolded and folded, the lean runtime's numpy network's, unfolded and folded, and the lean runtime's
    forward as served (``lean_served``: with the drift monitor, softmax and logits). Each is given twice:
    ``<kind>_b<batch>``, the fastest of the timed repeats, and ``<kind>_b<batch>_sustained``, the rate over
    all of them (what a load measured for seconds is comparable with; ``_timed``).

    Measured with glibc tuned as the server tunes it (``keep_freed_memory``): torch's fastest. With
    glibc's defaults, freed 1 MB activations are handed back to the OS and faulted in again on the next
    forward, and the batch-1,024 rate on the development machine fell anywhere from 155k to 300k rows/s,
    where tuned it made 275k to 450k: a ratio against the untuned rate would flatter the service.
    """
    keep_freed_memory()  # process-wide and idempotent
    use_blas_threads(1)  # numpy's BLAS, one thread, as the lean runtime serves
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)  # the core the servers get
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lean = load_lean_artifact(artifact.path)
    unfolded, folded = artifact.model, fold_batchnorm(artifact.model)
    nets: dict[str, Any] = {
        "unfolded": lambda x: unfolded(torch.from_numpy(x)),
        "folded": lambda x: folded(torch.from_numpy(x)),
        "lean_unfolded": lean.network,
        "lean_folded": fold(lean)[0],
        # The lean runtime's forward as bnserve-lean serves it: folded, the drift monitor fed every batch
        # (its window filling as in serving), softmax and logits.
        "lean_served": _lean_served(artifact.path),
    }
    try:
        rates = {}
        for kind, net in nets.items():
            for batch in (1, len(rows)):
                x = rows[:batch]
                best, mean = _timed(lambda net=net, x=x: net(x))
                rates[f"{kind}_b{batch}"], rates[f"{kind}_b{batch}_sustained"] = batch / best, batch / mean
        return rates
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, before)


def _timed(fn: Any) -> tuple[float, float]:
    """Gives back the seconds per call of the fastest of 15 timed repeats of about 0.1 s each, and over all
    15 (~1.5 s).

    The fastest is the best rate, so the ratios against it are conservative: spread over ~1.5 s, the
    repeats span the slow stretches a shared machine has (7 repeats of 50 ms gave anywhere from 230k to
    470k rows/s at batch 1,024 on the development machine). A load's rate is a mean over its seconds, slow
    stretches included, so against the fastest 0.1 s it also loses the machine's noise: on the 2-core AMD
    EPYC box the fastest repeat of a 1,024-row numpy forward was 2 to 8% above the rate over all 15
    (docs/PERFORMANCE.md). The rate over all 15 is the like-for-like one."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        n = max(5, round(0.1 / ((time.perf_counter() - t0) / 5)))
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t0) / n)
    return min(times), statistics.fmean(times)


@contextlib.contextmanager
def running(service: Service, model: Path, *, cpus: set[int] | None) -> Iterator[tuple[int, float, float]]:
    """Starts ``service``; gives back its port, the seconds from process start to a 200 on its readiness
    path, and its resident memory then (MB)."""
    port = free_port(service.ports)
    cmd = service.command(model, port)
    if cpus:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
    env = {**os.environ, **dict(service.env)}
    # A file, not a pipe: a server that logs more than a pipe holds would block on a pipe nobody reads.
    log = LOG_DIR / f"{service.name}.log"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err:
        start = time.perf_counter()
        # A session of its own: stopping it stops what it started too (TorchServe's Java frontend and workers).
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=err, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        ready = _wait_ready(proc, port, start, log, service.ready_path)
        yield port, ready, _rss_mb(proc.pid)
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """Stops ``proc`` and every process of its session: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.perf_counter() + grace
        while _group_alive(proc.pid) and time.perf_counter() < deadline:
            time.sleep(0.05)
        if not _group_alive(proc.pid):
            break
    proc.wait()  # the leader is gone (a zombie at most): reap it


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs; zombies do not count (an orphan's zombie lingers where
    PID 1 reaps no children, as in many containers), and there is no asking the kernel for a group's live
    members, so /proc is read."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after its last ")"
            state, _, group = stat.read_text().rpartition(")")[2].split()[:3]
            if int(group) == pgid and state not in ("Z", "X"):
                return True
    return False


def _serving_device(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metadata", timeout=5) as r:
        return str(orjson.loads(r.read())["serving"]["device"])


def _rss_mb(pid: int) -> float:
    """Gives back the resident memory of process ``pid`` and its children (MB), from /proc."""
    total_kb = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{p}/status").read_text()
            total_kb += int(
                next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            )
    return total_kb / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def _wait_ready(proc: subprocess.Popen[bytes], port: int, start: float, log: Path, path: str) -> float:
    while time.perf_counter() - start < 60:
        if proc.poll() is not None:
            raise SystemExit(
                f"{proc.args!r} exited with {proc.returncode}; its log {log}:\n{log.read_text()[-4000:]}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=1) as r,
        ):
            if r.status == 200:
                return time.perf_counter() - start
        time.sleep(0.01)
    raise SystemExit(f"{proc.args!r} was not ready after 60 s (GET {path})")


# ---------------------------------------------------------------------------------------------- runs


class Bench:
    def __init__(self, args: argparse.Namespace, artifact: Artifact, reference: Reference) -> None:
        self.args = args
        self.model = Path(args.model)
        self.reference = reference
        self.labels = artifact.manifest.class_labels
        self.use_wrk = args.load == "wrk" or (args.load == "auto" and have_wrk())
        pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
        cpus = sorted(os.sched_getaffinity(0))
        self.server_cpus = {cpus[0]} if pin else None
        self.load_cpus = set(cpus[1:]) if pin else None
        self.loads = [Load(c, 1) for c in args.concurrency] + [
            Load(args.big_concurrency, args.big_rows),
            Load(args.big_concurrency, args.big_rows, float32=True),
        ]
        seconds = 3.0 if args.quick else args.seconds
        self.seconds, self.warmup = seconds, 1.0 if args.quick else 2.0

    def check(self, answer: object, expected: np.ndarray) -> str | None:
        return check_answer(answer, expected, self.labels)

    def items(self, load: Load) -> list[Item]:
        """Distinct requests of ``load.rows`` rows each, from the reference pool, with their expected answers."""
        ref, rows = self.reference, load.rows
        starts = range(0, len(ref.rows) - rows + 1, rows) if rows > 1 else range(len(ref.rows))
        encode = (lambda x: x.astype("<f4").tobytes()) if load.float32 else request_body
        return [Item(encode(ref.rows[i : i + rows]), ref.expected[i : i + rows]) for i in starts]

    def mixed_items(self) -> list[Item]:
        """Distinct requests of 1 to 8 rows: a burst of these checks that batching keeps callers apart."""
        ref, items, i = self.reference, [], 0
        for size in [1, 2, 1, 3, 1, 8, 1, 5] * 8:
            if i + size > len(ref.rows):
                break
            items.append(Item(request_body(ref.rows[i : i + size]), ref.expected[i : i + size]))
            i += size
        return items

    def run_once(self, index: int) -> RunResult:
        result = RunResult(forward=self._forward_rates())
        if self.load_cpus:
            os.sched_setaffinity(0, self.load_cpus)
        services = [s for s in SERVICES if s.name in self.args.services]
        if any(s.module == "bench.torchserve" for s in services) and (reason := torchserve.available()):
            print(f"  {reason}", flush=True)
            services = [s for s in services if s.module != "bench.torchserve"]
        # Every server runs at once (an idle one takes no CPU), and each load drives them one after the
        # other: the two sides of a ratio are measured a few seconds apart, not minutes, so a slow stretch
        # of a shared machine hits both.
        with contextlib.ExitStack() as stack:
            ports = {}
            for service in services:
                if service.quiet_when_idle:
                    ports[service.name] = self._start(stack, service, result)
            for load in self.loads:
                print(f"  run {index + 1}: {load.name} ...", flush=True)
                for service in services:
                    if load.float32 and not service.name.startswith("bnserve"):
                        continue  # the reference services take JSON only
                    with contextlib.ExitStack() as own:
                        port = ports.get(service.name) or self._start(own, service, result)
                        measured = self._measure(service, port, load, result)
                        result.measurements.append(asyncio.run(measured))
        # Measured again once the servers are gone; the faster of the two counts (the conservative side).
        result.forward = {
            k: max(v, rate)
            for (k, v), rate in zip(result.forward.items(), self._forward_rates().values(), strict=True)
        }
        return result

    def _start(self, stack: contextlib.ExitStack, service: Service, result: RunResult) -> int:
        """Starts ``service`` until ``stack`` closes; gives back its port. Its first start of the run gives
        its startup time and idle memory."""
        port, ready, rss = stack.enter_context(running(service, self.model, cpus=self.server_cpus))
        if service.name not in result.startup_s:
            result.startup_s[service.name], result.idle_rss_mb[service.name] = ready, rss
            if service.name.startswith("bnserve"):
                result.device[service.name] = _serving_device(port)
        return port

    def _forward_rates(self) -> dict[str, float]:
        # At the large load's batch: the reference pool holds at least 256 rows, more than --big-rows may be.
        rows = self.reference.rows[: self.args.big_rows]
        return measure_forward(load_artifact(self.model), rows, cpus=self.server_cpus)

    async def _measure(self, service: Service, port: int, load: Load, result: RunResult) -> Measurement:
        items = self.items(load)
        if service.checked:
            await self._burst(port, result)
        if self.use_wrk:
            wrk = functools.partial(
                drive_wrk,
                f"http://{HOST}:{port}{service.predict_path}",
                items[0].body,
                concurrency=load.concurrency,
                cpus=sorted(self.load_cpus) if self.load_cpus else None,
                content_type=load.content_type,
                accept=load.accept,
            )
            await wrk(seconds=max(self.warmup, service.min_warmup_s))
            stop = asyncio.Event()
            trickle = asyncio.create_task(self._trickle(port, stop, load)) if service.checked else None
            r = await wrk(seconds=self.seconds)
            stop.set()
            rps, checked = r.rps, 0
            if trickle:
                sent = await trickle
                checked = self._collect(sent, result)
                if load.large:
                    # The load's own requests (``_trickle``), answered while wrk ran: uncounted, they took
                    # 10% of a 1,024-row load's rate out of its number (docs/PERFORMANCE.md).
                    rps += sent.rps
        else:
            check = self.check if service.checked else None
            for seconds in (max(self.warmup, service.min_warmup_s), self.seconds):
                r = await drive(
                    HOST,
                    port,
                    items,
                    concurrency=load.concurrency,
                    seconds=seconds,
                    check=check,
                    content_type=load.content_type,
                    accept=load.accept,
                    path=service.predict_path,
                )
            checked = self._collect(r, result) if service.checked else 0
            rps = r.rps
        if r.failures and not r.problems:
            failed = f"{service.name} {load.name}: {r.failures} non-200 answers or socket errors"
            # A reference service's failures are its own (TorchServe's queue under c64, say): reported with
            # its numbers, but only bnserve's (and the checked references') fail the run.
            (result.problems if service.checked else result.reference_failures).append(failed)
        return Measurement(
            service=service.name,
            load=load.name,
            rows=load.rows,
            concurrency=load.concurrency,
            rps=rps,
            rows_per_s=rps * load.rows,
            p50_ms=r.p50_ms,
            p99_ms=r.p99_ms,
            failures=r.failures,
            checked=checked,
        )

    async def _burst(self, port: int, result: RunResult) -> None:
        """Concurrent requests with distinct rows and sizes; every answer is checked."""
        items = self.mixed_items()
        r = await drive(HOST, port, items, concurrency=32, total=len(items) * 2, check=self.check)
        self._collect(r, result)

    async def _trickle(self, port: int, stop: asyncio.Event, load: Load) -> LoadResult:
        """Requests sent alongside wrk's load, every answer checked: beside a one-row load, distinct rows of 1
        to 8, so they are batched with it; beside a larger-request load, that load's own requests (JSON or
        float32), so that it stays the load its row states, and those count in the load's rate
        (``_measure``). A trickle of small requests there made it a mixed load: bnserve's batcher keeps large
        batches off the event loop while small requests come in, and one-row requests 10 ms apart cost a
        1,024-row float32 load 20% of its rate (docs/PERFORMANCE.md)."""
        large = load.large
        return await drive(
            HOST,
            port,
            self.items(load) if large else self.mixed_items(),
            concurrency=1,
            pause=0.01,
            stop=stop,
            check=self.check,
            content_type=load.content_type if large else "application/json",
            accept=load.accept if large else "",
        )

    @staticmethod
    def _collect(r: LoadResult, result: RunResult) -> int:
        result.checked += r.requests
        result.problems += r.problems
        return r.requests


# ---------------------------------------------------------------------------------------------- report


def summarize(runs: list[RunResult], args: argparse.Namespace) -> dict[str, Any]:
    """Gives back the medians over runs, the ratios (each computed within a run, then the median) and targets."""
    by_key: dict[tuple[str, str], list[Measurement]] = {}
    for run in runs:
        for m in run.measurements:
            by_key.setdefault((m.service, m.load), []).append(m)
    table = [
        {
            "service": service,
            "load": load,
            "rps": _median(m.rps for m in ms),
            "rows_per_s": _median(m.rows_per_s for m in ms),
            "p50_ms": _median(m.p50_ms for m in ms),
            "p99_ms": _median(m.p99_ms for m in ms),
            "failures": sum(m.failures for m in ms),
        }
        for (service, load), ms in by_key.items()
    ]
    loads = list(dict.fromkeys(m.load for m in runs[0].measurements))
    bigs = {Load(args.big_concurrency, args.big_rows, float32=f).name for f in (False, True)}
    ratios = []
    for load in loads:
        for variant in (*BNSERVE, "bnserve-lean-monitor-off", MINIMAL):
            if not any(m.service == variant and m.load == load for m in runs[0].measurements):
                continue
            row: dict[str, Any] = {"load": load, "service": variant}
            pairs = (("vs_naive", "naive"), ("vs_bare", "bare"), ("vs_raw", "raw"), ("vs_minimal", MINIMAL))
            for name, other in pairs:
                row[name] = (
                    _median(_ratio(run, load, variant, other) for run in runs) if other != variant else None
                )
            row["vs_torchserve"] = _median(_vs_best_torchserve(run, load, variant) for run in runs)
            row["p99_over_p50"] = _median(
                _rate(run, load, variant, "p99_ms") / _rate(run, load, variant, "p50_ms") for run in runs
            )
            row["vs_torch_runtime"] = (
                _median(_ratio(run, load, variant, "bnserve") for run in runs)
                if variant == "bnserve-lean"
                else None
            )
            off = MONITOR_OFF.get(variant)
            row["monitor_on_vs_off"] = (
                _median(_ratio(run, load, variant, off) for run in runs)
                if off is not None and any(m.service == off for m in runs[0].measurements)
                else None
            )
            if load in bigs:
                # The constant endpoints never read the rows: no ceiling to compare with.
                row["vs_bare"] = row["vs_raw"] = float("nan")
                row["vs_forward"] = _median(
                    _rate(run, load, variant, "rows_per_s") / _own_forward(run, variant, args.big_rows)
                    for run in runs
                )
                row["vs_forward_sustained"] = _median(
                    _rate(run, load, variant, "rows_per_s")
                    / _own_forward(run, variant, args.big_rows, sustained=True)
                    for run in runs
                )
                if variant == "bnserve-lean":  # what the HTTP path keeps of the forward it serves
                    row["vs_served_forward"] = _median(
                        _rate(run, load, variant, "rows_per_s") / run.forward[f"lean_served_b{args.big_rows}"]
                        for run in runs
                    )
            ratios.append(row)
    forward = {key: _median(run.forward[key] for run in runs) for key in runs[0].forward}
    startup = {key: _median(run.startup_s[key] for run in runs) for key in runs[0].startup_s}
    rss = {key: _median(run.idle_rss_mb[key] for run in runs) for key in runs[0].idle_rss_mb}
    return {
        "table": table,
        "ratios": ratios,
        "forward_rows_per_s": forward,
        "startup_s": startup,
        "idle_rss_mb": rss,
        "device": runs[0].device,
        "checked_answers": sum(run.checked for run in runs),
        "problems": [p for run in runs for p in run.problems],
        "reference_failures": [p for run in runs for p in run.reference_failures],
    }


def _own_forward(run: RunResult, variant: str, batch: int, *, sustained: bool = False) -> float:
    """The variant's own runtime in process at ``batch``, the faster of folded and unfolded (conservative):
    its fastest repeat, or with ``sustained`` its rate over all the repeats (``_timed``)."""
    # The lean variants and the minimal server all compute models.numpy_net.
    prefix = "lean_" if variant.startswith("bnserve-lean") or variant == MINIMAL else ""
    suffix = "_sustained" if sustained else ""
    return max(run.forward[f"{prefix}{kind}_b{batch}{suffix}"] for kind in ("folded", "unfolded"))


def _vs_best_torchserve(run: RunResult, load: str, variant: str) -> float:
    best = max(
        (m.rps for m in run.measurements if m.load == load and m.service.startswith("torchserve")),
        default=float("nan"),
    )
    return _rate(run, load, variant, "rps") / best if best else float("nan")


def _median(values: Any) -> float:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(statistics.median(values)) if values else float("nan")


def _rate(run: RunResult, load: str, service: str, what: str) -> float:
    for m in run.measurements:
        if m.service == service and m.load == load:
            return float(getattr(m, what))
    return float("nan")


def _ratio(run: RunResult, load: str, a: str, b: str) -> float:
    den = _rate(run, load, b, "rps")
    return _rate(run, load, a, "rps") / den if den else float("nan")


def _shown(value: float | None, fmt: str) -> str:
    """A ratio, or nothing where a service it needs was not run (--services)."""
    return "" if value is None or np.isnan(value) else fmt.format(value)


def print_report(summary: dict[str, Any], args: argparse.Namespace, use_wrk: bool) -> None:
    runs = args.runs
    print(
        f"\nmedian of {runs} run{'s' if runs > 1 else ''}; load generator: {'wrk' if use_wrk else 'built-in asyncio'}"
    )
    print(
        "\n| load | service | req/s | rows/s | p50 ms | p99 ms | failures |\n|---|---|---:|---:|---:|---:|---:|"
    )
    for r in summary["table"]:
        print(
            f"| {r['load']} | {r['service']} | {r['rps']:,.0f} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['failures']} |"
        )
    print(
        "\n| load | service | / naive | / bare FastAPI | / raw ASGI | / minimal | / TorchServe best | lean / torch "
        "| monitor on / off | p99 / p50 | rows/s / own forward | rows/s / own forward, sustained "
        "| rows/s / served forward |"
        "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in summary["ratios"]:
        cells = [
            _shown(r["vs_naive"], "{:.2f}x"),
            _shown(r["vs_bare"], "{:.0%}"),
            _shown(r["vs_raw"], "{:.0%}"),
            _shown(r.get("vs_minimal"), "{:.0%}"),
            _shown(r["vs_torchserve"], "{:.2f}x"),
            _shown(r["vs_torch_runtime"], "{:.2f}x"),
            _shown(r["monitor_on_vs_off"], "{:.0%}"),
            _shown(r["p99_over_p50"], "{:.1f}"),
            _shown(r.get("vs_forward"), "{:.0%}"),
            _shown(r.get("vs_forward_sustained"), "{:.0%}"),
            _shown(r.get("vs_served_forward"), "{:.0%}"),
        ]
        print(f"| {r['load']} | {r['service']} | " + " | ".join(cells) + " |")
    fwd = summary["forward_rows_per_s"]
    print("\nin-process forward, one thread (rows/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in fwd.items()))
    print("startup to ready (s): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["startup_s"].items()))
    print(
        "idle resident memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["idle_rss_mb"].items())
    )
    print("forwards ran on: " + ", ".join(f"{k} {v}" for k, v in summary["device"].items()))
    if summary["reference_failures"]:
        print("\nfailures of the reference services (their own; the run still passes):")
        for p in summary["reference_failures"][:20]:
            print(f"  {p}")
    print_checked(summary["problems"], summary["checked_answers"])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="artifact directory (trained there if missing)"
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat the whole benchmark; the report gives medians"
    )
    parser.add_argument("--quick", action="store_true", help="3 s per load instead of --seconds")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument(
        "--load", choices=["auto", "wrk", "builtin"], default="auto", help="auto: wrk when installed"
    )
    parser.add_argument(
        "--concurrency", type=_ints, default=[1, 16, 64], help="connections for the one-row loads"
    )
    parser.add_argument(
        "--big-rows", type=int, default=1024, help="rows per request of the large-request load"
    )
    parser.add_argument(
        "--big-concurrency", type=int, default=4, help="connections for the large-request load"
    )
    parser.add_argument(
        "--services",
        type=_names,
        default=[s.name for s in SERVICES],
        help=f"subset of {[s.name for s in SERVICES]}",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the servers and the load to separate CPUs"
    )
    parser.add_argument("--json", metavar="OUT", help="also write every run and the summary as JSON here")
    return parser


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",")]
    valid = [s.name for s in SERVICES]
    if bad := [n for n in names if n not in valid]:
        raise argparse.ArgumentTypeError(f"unknown services {bad}; valid: {valid}")
    return names


def prepare(args: argparse.Namespace) -> tuple[Artifact, Reference]:
    """Gives back the artifact ``args.model`` names (trained there if missing; ``args.model`` is set to its
    path) and the reference answers of its sampled rows; refuses ``--load wrk`` without wrk."""
    if args.load == "wrk" and not have_wrk():
        raise SystemExit("--load wrk: wrk is not installed (apt-get install wrk), or use --load builtin")
    artifact = ensure_artifact(Path(args.model))
    args.model = str(artifact.path)
    return artifact, Reference.from_artifact(artifact, sample_rows(artifact, max(args.big_rows, 256)))


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    artifact, reference = prepare(args)
    bench = Bench(args, artifact, reference)
    print(
        f"bnserve benchmark: model {artifact.manifest.name!r} at {args.model}, {os.cpu_count()} CPUs, "
        f"servers on CPU {bench.server_cpus or 'any'}, load on CPU {bench.load_cpus or 'any'}, "
        f"{'wrk' if bench.use_wrk else 'built-in asyncio load'}, {bench.seconds:g} s per load",
        flush=True,
    )
    runs = [bench.run_once(i) for i in range(args.runs)]
    summary = summarize(runs, args)
    print_report(summary, args, bench.use_wrk)
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(
                {"runs": [asdict(r) for r in runs], "summary": summary},
                option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
            )
        )
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
