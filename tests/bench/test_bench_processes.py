"""The benchmark stops each server with everything it started (TorchServe's Java frontend and workers)."""

from __future__ import annotations

import os
import subprocess
import time

from bench.serve import SERVICES, _group_alive, _stop_group


def test_stop_group_stops_the_children_too() -> None:
    # A leader that starts a child and waits on it, as `python -m bench.torchserve` runs `torchserve`.
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    os.kill(child, 0)  # running
    start = time.perf_counter()
    _stop_group(proc)
    assert proc.returncode is not None
    assert not _group_alive(proc.pid)
    assert time.perf_counter() - start < 10  # SIGTERM sufficed


def test_stop_group_kills_what_ignores_sigterm() -> None:
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & wait"], start_new_session=True)
    time.sleep(0.2)
    _stop_group(proc, grace=0.5)
    assert not _group_alive(proc.pid)


def test_only_torchserve_is_started_for_its_own_measurements() -> None:
    noisy = {s.name for s in SERVICES if not s.quiet_when_idle}
    assert noisy == {"torchserve-b1", "torchserve-b8", "torchserve-b16"}
    assert all(s.min_warmup_s >= 5 for s in SERVICES if s.name in noisy)
