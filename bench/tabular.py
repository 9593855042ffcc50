"""Benchmarks of real tables (issue 14), ratios measured in one run:

1. load: reading a 100,000-row, 20-column mixed CSV and building the preprocessing (types, split, fit,
   encoding: ``training.data.load_table``), against pyarrow reading the same file alone. Target: < 3x.
2. serve: one-row requests at 16 connections to a model with categorical features, against a numeric-only
   model of the same input width, both served by bnserve, driven by wrk in turns. Target: >= 80%.

    python -m bench.tabular            # both
    python -m bench.tabular --quick    # shorter loads
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/tabular.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson
import pandas as pd
import pyarrow.csv as pa_csv
import torch

from bench.load import drive_wrk, have_wrk
from bench.serve import HOST, SERVICES, running
from models import load_artifact, save_artifact
from training import TrainConfig, train
from training.data import load_table

WORK = Path(tempfile.gettempdir()) / "bnserve-bench" / "tabular"
CATEGORIES = ("red", "green", "blue", "teal", "amber", "violet", "grey", "black")


def mixed_csv(path: Path, rows: int = 100_000, *, seed: int = 0) -> Path:
    """Writes 20 columns: 12 numeric (some missing), 6 text categories (some missing), 1 boolean, the target."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for j in range(12):
        v = rng.normal(size=rows).round(4).astype(object)
        v[rng.random(rows) < 0.02] = "NA"
        columns[f"x{j}"] = v
    for j in range(6):
        c = rng.choice(CATEGORIES, size=rows).astype(object)
        c[rng.random(rows) < 0.02] = ""
        columns[f"c{j}"] = c
    columns["flag"] = rng.choice(["true", "false"], size=rows)
    columns["y"] = rng.integers(0, 2, rows)
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_load(repeats: int) -> dict[str, float]:
    """The best of ``repeats`` turns each, taken in alternation so that a busy moment hits both alike."""
    path = mixed_csv(WORK / "mixed-100k.csv")
    cfg = TrainConfig(csv=str(path), target="y")
    alone, ours = [], []
    with contextlib.redirect_stdout(io.StringIO()):  # the schema
        for _ in range(repeats):
            alone.append(seconds(lambda: pa_csv.read_csv(path)))
            ours.append(seconds(lambda: load_table(cfg, None)))
    return {"read_alone_s": min(alone), "load_and_preprocess_s": min(ours), "ratio": min(ours) / min(alone)}


def table_models() -> tuple[Path, Path, int]:
    """Trains the two models once: with categories, and numeric-only with the same input width."""
    rng = np.random.default_rng(1)
    n = 2000
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "colour": rng.choice(CATEGORIES[:6], size=n),
            "shape": rng.choice(("round", "square", "star"), size=n),
            "flag": rng.choice(["yes", "no"], size=n),
            "y": rng.integers(0, 2, n),
        }
    )
    quick: dict[str, Any] = {"epochs": 1, "device": "cpu", "progress": False}
    with contextlib.redirect_stdout(io.StringIO()):
        mixed = train(TrainConfig(target="y", out_dir=str(WORK / "model-mixed"), **quick), data=frame)
        width = load_artifact(mixed).manifest.input_width
        numbers = pd.DataFrame(rng.normal(size=(n, width)), columns=[f"x{j}" for j in range(width)])
        numbers["y"] = rng.integers(0, 2, n)
        trained = load_artifact(
            train(TrainConfig(target="y", out_dir=str(WORK / "model-numeric-table"), **quick), data=numbers)
        )
    # The baseline takes numbers as they are (no preprocessing section): the numeric fast path of before.
    m = trained.manifest
    numeric = save_artifact(
        WORK / "model-numeric",
        trained.model,
        m.layers,
        name="numeric",
        task=m.task,
        feature_names=m.feature_names,
        class_labels=m.class_labels,
        canary_inputs=torch.tensor([r for r in m.canary.inputs if None not in r]),
    )
    return mixed, numeric, width


def request_bodies(mixed: Path, numeric: Path, width: int) -> dict[Path, bytes]:
    row = {"a": 0.3, "b": -1.2, "colour": "teal", "shape": "star", "flag": "yes"}
    return {mixed: orjson.dumps({"instances": [row]}), numeric: orjson.dumps({"instances": [[0.1] * width]})}


def bench_asgi(requests: int, turns: int) -> dict[str, float]:
    """The same one-row requests through the app's ASGI entry in this process, one at a time: the
    per-request CPU of each model without sockets or a load generator, less exposed to a busy machine."""
    from fastapi.testclient import TestClient

    from service.http.app import create_app
    from service.settings import Settings

    mixed, numeric, width = table_models()
    bodies = request_bodies(mixed, numeric, width)
    best: dict[Path, float] = {}

    async def sent(message: object) -> None:
        pass

    async def run(app: Any, body: bytes) -> float:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        start = time.perf_counter()
        for _ in range(requests):
            await app(
                {"type": "http", "method": "POST", "path": "/predict", "headers": headers}, receive, sent
            )
        return (time.perf_counter() - start) / requests

    for model in (numeric, mixed):
        app = create_app(Settings(model_dir=model, device="cpu", drift_enabled=True, log_level="warning"))
        with TestClient(app):  # the lifespan: load, then serve
            best[model] = min(asyncio.run(run(app, bodies[model])) for _ in range(turns))
    return {
        "categorical_us": best[mixed] * 1e6,
        "numeric_us": best[numeric] * 1e6,
        "ratio": best[numeric] / best[mixed],
    }


def bench_serve(seconds: float, turns: int) -> dict[str, float]:
    if not have_wrk():
        raise SystemExit("the serving benchmark needs wrk (apt-get install wrk)")
    mixed, numeric, width = table_models()
    bodies = request_bodies(mixed, numeric, width)
    service = next(s for s in SERVICES if s.name == "bnserve")
    rates: dict[Path, list[float]] = {mixed: [], numeric: []}
    with (
        running(service, mixed, cpus={0}) as (mixed_port, _, _),
        running(service, numeric, cpus={0}) as (num_port, _, _),
    ):
        ports = {mixed: mixed_port, numeric: num_port}
        for _ in range(turns):
            for model in (numeric, mixed):
                url = f"http://{HOST}:{ports[model]}/predict"
                result = asyncio.run(drive_wrk(url, bodies[model], concurrency=16, seconds=seconds, cpus=[1]))
                if result.failures:
                    raise SystemExit(f"{result.failures} failed requests to {model.name}")
                rates[model].append(result.rps)
    m, n = statistics.median(rates[mixed]), statistics.median(rates[numeric])
    return {"width": width, "categorical_rps": m, "numeric_rps": n, "ratio": m / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tabular", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loads: a smoke test")
    parser.add_argument("--only", choices=("load", "serve"), help="run one of the two")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    ok = True
    if args.only in (None, "load"):
        r = bench_load(repeats=2 if args.quick else 7)
        print(
            f"load 100,000 x 20 mixed CSV: pyarrow read alone {r['read_alone_s'] * 1000:.0f} ms, read + types + "
            f"preprocessing fit + encode {r['load_and_preprocess_s'] * 1000:.0f} ms: {r['ratio']:.2f}x (target < 3x)"
        )
        ok &= r["ratio"] < 3
    if args.only in (None, "serve"):
        r = bench_serve(seconds=2 if args.quick else 5, turns=1 if args.quick else 3)
        print(
            f"one-row requests x 16 connections, width {r['width']:.0f}: categorical {r['categorical_rps']:.0f} req/s, "
            f"numeric-only {r['numeric_rps']:.0f} req/s: {r['ratio']:.1%} (target >= 80%)"
        )
        ok &= r["ratio"] >= 0.8
        r = bench_asgi(requests=500 if args.quick else 3000, turns=2 if args.quick else 5)
        print(
            f"one-row requests in process (ASGI entry, best of turns): categorical {r['categorical_us']:.0f} µs, "
            f"numeric-only {r['numeric_us']:.0f} µs per request: {r['ratio']:.1%} of the numeric-only rate"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
