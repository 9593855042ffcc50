"""Launching several training processes from a test, as torchrun does or by hand with its variables.

    result = torchrun(["--dataset", "wine", "--out", str(out)], nproc=2)   # python -m torch.distributed.run
    results = by_hand([[...args of rank 0...], [...args of rank 1...]])    # one process per rank, own exit codes

Every process gets one CPU thread (two ranks share this 2-core machine) and gloo on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.load import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # importing torch in two processes at once on a busy 2-core machine is slow


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)} | (extra or {})


def torchrun(
    args: list[str], *, nproc: int = 2, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Gives back the finished ``torchrun --nproc-per-node NPROC -m training ARGS`` run."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-port",
        str(free_port()),
        "-m",
        "training",
        "--device",
        "cpu",
        "--no-progress",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO_ROOT, env=_env(env)
    )


def by_hand(
    commands: list[list[str]], *, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Gives back one finished process per rank, each started with torchrun's variables set by hand.

    ``commands[r]`` is what rank ``r`` runs after ``python``: ``["-m", "training", ...]`` or another module.
    """
    port = str(free_port())
    procs = []
    for rank, command in enumerate(commands):
        rank_env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(len(commands)),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *command],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO_ROOT,
                env=_env(env) | rank_env,
            )
        )
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def training_args(*args: str) -> list[str]:
    """Gives back ``-m training --device cpu --no-progress ARGS`` for ``by_hand``."""
    return ["-m", "training", "--device", "cpu", "--no-progress", *args]
