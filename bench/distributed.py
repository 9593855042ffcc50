"""Training on 1 and 2 ranks: wall time per epoch, and how far the EMA is from the precise statistics.

    python -m bench.distributed                        # both tables (docs/PERFORMANCE.md), a few minutes
    python -m bench.distributed --tables gap --batch-sizes 16,64 --datasets wine,digits

Every run is a real process: ``python -m training`` for 1 rank, ``torchrun --nproc-per-node 2 -m training``
for 2 (gloo on the CPU, one thread per rank), default flags and seed. Time per epoch is the manifest's
``train_seconds`` (the training loop with each epoch's validation) over the epochs. The gap is the
manifest's ``bn_statistics.ema_gap``, the worst BN layer: max over channels of |ema_mean - mean| / σ
and of |log((ema_var + eps) / (var + eps))|, with the validation metric served with either.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import free_port

DATASETS = ("breast_cancer", "wine", "iris", "digits", "diabetes")


def run(ranks: int, args: list[str]) -> tuple[dict[str, Any], float]:
    """Gives back the manifest of one training run and its wall time in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifact"
        launcher = [sys.executable, "-m", "training"]
        if ranks > 1:
            launcher = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc-per-node",
                str(ranks),
                "--master-port",
                str(free_port()),
                "-m",
                "training",
            ]
        command = [*launcher, "--device", "cpu", "--no-progress", "--out", str(out), *args]
        started = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}
        )
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        seconds = time.perf_counter() - started
        manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
        return manifest, seconds


def epoch_times(datasets: list[str], epochs: int) -> None:
    print(f"| dataset | ranks | s per epoch | whole run, s ({epochs} epochs, start-up included) |")
    print("|---|---|---|---|")
    for dataset in datasets:
        for ranks in (1, 2):
            manifest, seconds = run(ranks, ["--dataset", dataset, "--epochs", str(epochs)])
            per_epoch = manifest["metrics"]["train_seconds"] / epochs
            print(f"| {dataset} | {ranks} | {per_epoch:.3f} | {seconds:.1f} |", flush=True)


def gaps(datasets: list[str], batch_sizes: list[int]) -> None:
    print(
        "| dataset | ranks | batch per rank | max \\|Δmean\\|/σ | max \\|log var ratio\\| | "
        "val metric, EMA | val metric, precise |"
    )
    print("|---|---|---|---|---|---|---|")
    for dataset in datasets:
        for batch in batch_sizes:
            for ranks in (1, 2):
                args = ["--dataset", dataset, "--batch-size", str(batch * ranks), "--bn-stats", "precise"]
                manifest, _ = run(ranks, args)
                gap = manifest["bn_statistics"]["ema_gap"]
                m = manifest["metrics"]
                key = "val_accuracy" if "val_accuracy" in m else "val_r2"
                print(
                    f"| {dataset} | {ranks} | {batch} | {max(g['max_abs_mean_shift'] for g in gap):.3f} | "
                    f"{max(g['max_abs_log_var_ratio'] for g in gap):.3f} | {key.removeprefix('val_')} "
                    f"{m['ema_' + key]:.4f} | {m[key]:.4f} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="time,gap", help="time, gap, or both")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated built-in datasets")
    parser.add_argument("--time-datasets", default="breast_cancer,digits", help="datasets for the time table")
    parser.add_argument("--batch-sizes", default="16,64", help="batch sizes per rank for the gap table")
    parser.add_argument("--epochs", type=int, default=20, help="epochs for the time table")
    args = parser.parse_args()
    tables = args.tables.split(",")
    print(f"# {os.cpu_count()} CPUs, torch threads 1 per rank\n")
    if "time" in tables:
        epoch_times(args.time_datasets.split(","), args.epochs)
        print()
    if "gap" in tables:
        gaps(args.datasets.split(","), [int(b) for b in args.batch_sizes.split(",")])


if __name__ == "__main__":
    main()
