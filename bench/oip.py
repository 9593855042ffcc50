"""Benchmark the Open Inference Protocol routes against /predict, on one bnserve process, in one run.

    python -m bench.oip                  # 10 rounds of 2 s a side; trains the default artifact the first time
    python -m bench.oip --quick          # 3 rounds: a smoke test
    python -m bench.oip --json out.json

Two pairs of loads, each side driven back to back on the same server (pinned to CPU 0, the load generator on
the others), alternating which goes first over ``--rounds`` short rounds, so that a slow stretch of a shared
machine hits both sides of a ratio (each round's ratio is taken, then their median):

- one row per request at 16 connections: POST /predict with JSON, and POST /v2/models/{model}/infer with JSON;
- 1,024 rows per request at 4 connections: /predict's float32 bulk path (raw float32 in and out), and the
  inference route with a binary input tensor and the binary ``probabilities`` output.

Targets: the inference route makes at least 90% of /predict's requests (rows) per second in both. Before each
load a burst, and during it a trickle, of distinct requests of 1 to 8 rows of both kinds are checked against
the unbatched, unfolded network within 1e-6; any mismatch makes the run fail (exit status 1).

Each load also reads the server process's CPU time (/proc/<pid>/stat, all its threads), so each side's
requests per server CPU-second are reported beside its requests per second: on a machine shared with other
work, where the server's core is taken away for stretches, the wall-clock rate swings from round to round and
the CPU-normalized one much less (a saturated one-core server's requests per second is 1 / its CPU per request).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/oip.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson

from bench.check import (
    Reference,
    check_answer,
    check_oip_answer,
    oip_binary_body,
    oip_json_body,
    print_checked,
    request_body,
)
from bench.load import Item, LoadResult, drive, drive_wrk, have_wrk
from bench.serve import DEFAULT_MODEL, HOST, Service, prepare, running

TARGET = 0.90
BNSERVE = Service("bnserve", "service", checked=True, env=(("BNSERVE_DRIFT_ENABLED", "true"),))
MIXED_SIZES = [1, 2, 1, 3, 1, 8, 1, 5] * 4


@dataclass(frozen=True)
class Side:
    """One side of a pair: a route, how its requests are written, and how its answers are checked."""

    name: str
    path: str
    encode: Callable[[np.ndarray], Item]  # rows -> request (expected answer filled in by the caller)
    content_type: str
    accept: str = ""


@dataclass
class Sample:
    pair: str
    side: str
    round: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    per_cpu_s: float  # requests answered (the load's and the trickle's) per second of the server's CPU time


@dataclass
class Result:
    samples: list[Sample] = field(default_factory=list)
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def sides(model_name: str) -> dict[str, tuple[Side, Side]]:
    """Gives back the two pairs: (the /predict side, the inference side), by load."""
    infer = f"/v2/models/{model_name}/infer"

    def binary(rows: np.ndarray) -> Item:
        body, headers = oip_binary_body(
            rows, ["probabilities", "label"] if len(rows) < 64 else ["probabilities"]
        )
        return Item(body, headers=headers)

    return {
        "json": (
            Side("/predict JSON", "/predict", lambda r: Item(request_body(r)), "application/json"),
            Side("OIP infer JSON", infer, lambda r: Item(oip_json_body(r)), "application/json"),
        ),
        "binary": (
            Side(
                "/predict float32 bulk",
                "/predict",
                lambda r: Item(r.astype("<f4").tobytes()),
                "application/octet-stream",
                "application/octet-stream",
            ),
            Side("OIP infer binary", infer, binary, "application/octet-stream"),
        ),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, reference: Reference, model_name: str) -> None:
        self.args, self.reference = args, reference
        self.pairs = sides(model_name)
        self.use_wrk = args.load == "wrk" or (args.load == "auto" and have_wrk())
        cpus = sorted(os.sched_getaffinity(0))
        pin = not args.no_pin and len(cpus) >= 2
        self.server_cpus = {cpus[0]} if pin else None
        self.load_cpus = set(cpus[1:]) if pin else None
        self.seconds = args.seconds
        if args.quick:
            args.rounds = min(args.rounds, 3)
        self.warmup = 1.0  # before each side's first round only: the server is warm after that
        self.loads = {"json": (args.concurrency, 1), "binary": (args.big_concurrency, args.big_rows)}
        self.pid = 0  # the server's, once started

    def item(self, side: Side, start: int, rows: int) -> Item:
        item = side.encode(self.reference.rows[start : start + rows])
        item.expected = self.reference.expected[start : start + rows]
        return item

    def check(self, side: Side) -> Callable[[object, np.ndarray], str | None]:
        labels = self.reference.class_labels
        if side.path == "/predict":
            return lambda answer, expected: check_answer(answer, expected, labels)
        return lambda answer, expected: check_oip_answer(answer, expected, labels)

    def mixed(self, side: Side) -> list[Item]:
        """Distinct requests of 1 to 8 rows from the reference pool, each with its expected answer."""
        items, i = [], 0
        for size in MIXED_SIZES:
            if i + size > len(self.reference.rows):
                break
            items.append(self.item(side, i, size))
            i += size
        return items

    def run(self) -> Result:
        result = Result()
        if self.load_cpus:
            os.sched_setaffinity(0, self.load_cpus)
        with running(BNSERVE, Path(self.args.model), cpus=self.server_cpus) as (port, _, _):
            self.pid = server_pid(port)
            for round_ in range(self.args.rounds):
                for pair, (predict, oip) in self.pairs.items():
                    order = (predict, oip) if round_ % 2 == 0 else (oip, predict)
                    for side in order:
                        print(f"  round {round_ + 1}: {pair}: {side.name} ...", flush=True)
                        result.samples.append(asyncio.run(self.measure(port, pair, side, round_, result)))
        return result

    async def measure(self, port: int, pair: str, side: Side, round_: int, result: Result) -> Sample:
        concurrency, rows = self.loads[pair]
        check, mixed, http = self.check(side), self.mixed(side), self.http(side)
        if round_ == 0:
            burst = await drive(HOST, port, mixed, concurrency=32, total=2 * len(mixed), check=check, **http)
            self.collect(burst, result)
        main = self.item(side, 0, rows)
        if self.use_wrk:
            url = f"http://{HOST}:{port}{side.path}"
            options = {"concurrency": concurrency, "cpus": self.load_cpus, "headers": main.headers}
            options |= {"content_type": side.content_type, "accept": side.accept}
            if round_ == 0:
                await drive_wrk(url, main.body, seconds=self.warmup, **options)
            stop = asyncio.Event()
            trickle = asyncio.create_task(
                drive(HOST, port, mixed, concurrency=1, pause=0.01, stop=stop, check=check, **http)
            )
            cpu = cpu_seconds(self.pid)
            r = await drive_wrk(url, main.body, seconds=self.seconds, **options)
            stop.set()
            extra = await trickle
            cpu = cpu_seconds(self.pid) - cpu
            self.collect(extra, result)
            answered = r.requests + extra.requests
        else:
            items = [self.item(side, i, rows) for i in range(0, len(self.reference.rows) - rows + 1, rows)]
            load = functools.partial(drive, HOST, port, items, concurrency=concurrency, check=check, **http)
            if round_ == 0:
                await load(seconds=self.warmup)
            cpu = cpu_seconds(self.pid)
            r = await load(seconds=self.seconds)
            cpu = cpu_seconds(self.pid) - cpu
            self.collect(r, result)
            answered = r.requests
        if r.failures and not r.problems:
            result.problems.append(f"{side.name}: {r.failures} non-200 answers or socket errors")
        per_cpu_s = answered / cpu if cpu > 0 else float("nan")
        return Sample(pair, side.name, round_, r.rps, r.rps * rows, r.p50_ms, r.p99_ms, r.failures, per_cpu_s)

    @staticmethod
    def http(side: Side) -> dict[str, Any]:
        return {"path": side.path, "content_type": side.content_type, "accept": side.accept}

    @staticmethod
    def collect(r: LoadResult, result: Result) -> None:
        result.checked += r.requests
        result.problems += r.problems


def server_pid(port: int) -> int:
    """Gives back the process id of the ``python -m service ... --port PORT`` this benchmark started."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"service" in argv and b"--port" in argv and argv[argv.index(b"--port") + 1] == str(port).encode():
            return int(proc.name)
    raise SystemExit(f"no server process listening on port {port} found in /proc")


def cpu_seconds(pid: int) -> float:
    """Gives back the user and system CPU time the process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def summarize(result: Result, bench: Bench) -> dict[str, Any]:
    """Gives back each side's mean rate over the rounds and each pair's ratio (the inference side over
    /predict, round by round, then the median)."""
    table, ratios = [], []
    for pair, (predict, oip) in bench.pairs.items():
        for side in (predict, oip):
            samples = [s for s in result.samples if s.pair == pair and s.side == side.name]
            table.append(
                {
                    "pair": pair,
                    "side": side.name,
                    "rps": statistics.mean(s.rps for s in samples),
                    "rows_per_s": statistics.mean(s.rows_per_s for s in samples),
                    "p50_ms": statistics.median(s.p50_ms for s in samples),
                    "p99_ms": statistics.median(s.p99_ms for s in samples),
                    "failures": sum(s.failures for s in samples),
                    "per_cpu_s": statistics.mean(s.per_cpu_s for s in samples),
                }
            )
        by_round = [
            _rate(result, pair, oip.name, r) / _rate(result, pair, predict.name, r)
            for r in range(bench.args.rounds)
        ]
        by_cpu = [
            _rate(result, pair, oip.name, r, "per_cpu_s") / _rate(result, pair, predict.name, r, "per_cpu_s")
            for r in range(bench.args.rounds)
        ]
        concurrency, rows = bench.loads[pair]
        ratios.append(
            {
                "pair": pair,
                "load": f"{rows} row{'s' if rows > 1 else ''} x c{concurrency}",
                "ratio": statistics.median(by_round),
                "by_round": by_round,
                "met": statistics.median(by_round) >= TARGET,
                "cpu_ratio": statistics.median(by_cpu),
                "cpu_by_round": by_cpu,
                "cpu_met": statistics.median(by_cpu) >= TARGET,
            }
        )
    return {"table": table, "ratios": ratios, "checked_answers": result.checked, "problems": result.problems}


def _rate(result: Result, pair: str, side: str, round_: int, what: str = "rps") -> float:
    (sample,) = [s for s in result.samples if (s.pair, s.side, s.round) == (pair, side, round_)]
    return float(getattr(sample, what))


def print_report(summary: dict[str, Any], bench: Bench) -> None:
    print(f"\nload generator: {'wrk' if bench.use_wrk else 'built-in asyncio'}; {bench.args.rounds} rounds")
    print(
        "\n| load | side | req/s | rows/s | p50 ms | p99 ms | failures | req per server CPU-s |"
        "\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for r in summary["table"]:
        print(
            f"| {r['pair']} | {r['side']} | {r['rps']:,.0f} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['failures']} | {r['per_cpu_s']:,.0f} |"
        )
    print(
        "\n| load | OIP / /predict: req/s | by round | per server CPU-s | by round | "
        f"target {TARGET:.0%} (req/s; per CPU-s) |\n|---|---:|---|---:|---|---|"
    )
    for r in summary["ratios"]:
        rounds = ", ".join(f"{x:.0%}" for x in r["by_round"])
        cpu_rounds = ", ".join(f"{x:.0%}" for x in r["cpu_by_round"])
        verdict = f"{'met' if r['met'] else 'MISSED'}; {'met' if r['cpu_met'] else 'MISSED'}"
        print(
            f"| {r['load']} ({r['pair']}) | {r['ratio']:.0%} | {rounds} | {r['cpu_ratio']:.0%} | {cpu_rounds} | "
            f"{verdict} |"
        )
    print_checked(summary["problems"], summary["checked_answers"], what="checked answers (both routes)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.oip", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="artifact directory (trained there if missing)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per round and side")
    parser.add_argument("--quick", action="store_true", help="at most 3 rounds")
    parser.add_argument(
        "--rounds", type=int, default=10, help="each pair measured this many times, order alternating"
    )
    parser.add_argument(
        "--load", choices=["auto", "wrk", "builtin"], default="auto", help="auto: wrk when installed"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="connections for the one-row pair")
    parser.add_argument("--big-rows", type=int, default=1024, help="rows per request of the binary pair")
    parser.add_argument("--big-concurrency", type=int, default=4, help="connections for the binary pair")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the server and the load to separate CPUs"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the samples and the summary as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    artifact, reference = prepare(args)
    bench = Bench(args, reference, artifact.manifest.name)
    print(
        f"bnserve OIP benchmark: model {artifact.manifest.name!r} at {args.model}, {os.cpu_count()} CPUs, server on "
        f"CPU {bench.server_cpus or 'any'}, load on CPU {bench.load_cpus or 'any'}, {args.rounds} rounds of "
        f"{bench.seconds:g} s a side",
        flush=True,
    )
    result = bench.run()
    summary = summarize(result, bench)
    print_report(summary, bench)
    if args.json:
        data = {"samples": [asdict(s) for s in result.samples], "summary": summary}
        Path(args.json).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
