"""The install without torch, measured: a scratch venv with requirements-lean.txt, its size, and the lean
service started from it (torch not installed at all): start to ready, idle resident memory, one answer.

    python -m bench.lean_env                     # the benchmark artifact (trained by bench.serve)
    python -m bench.lean_env --model artifacts/breast_cancer --keep /tmp/lean-venv

Where no container engine runs, the CPU image without torch is estimated as this environment plus the
interpreter it was made from (python:3.11-slim holds a Python like it, plus Debian's base); the target is
under 400 MB. docs/PERFORMANCE.md reports what it printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.load import free_port
from bench.serve import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent


def size_mb(path: Path, *, skip: tuple[str, ...] = ()) -> float:
    """Gives back the bytes of every file under ``path`` (symlinks not followed, folders named in ``skip``
    left out), in MB."""
    total = 0
    for dirpath, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 1e6


def make_venv(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements-lean.txt")], check=True)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True)


def serve_once(venv: Path, model: Path) -> dict[str, float | str]:
    """Starts the lean service from ``venv`` outside the source tree; gives back what it cost."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BNSERVE_", "PYTHON"))}
    env |= {"BNSERVE_RUNTIME": "lean", "BNSERVE_MODEL_DIR": str(model), "BNSERVE_PORT": str(port)}
    command = [str(venv / "bin" / "python"), "-m", "service", "--log-level", "warning"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=tempfile.gettempdir())  # not the checkout: the install
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - start > 60:
                raise SystemExit(f"the lean service from {venv} did not become ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                time.sleep(0.01)
        ready = time.perf_counter() - start
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=5) as r:
            runtime = str(__import__("orjson").loads(r.read())["serving"]["runtime"])
        return {"ready_s": ready, "idle_rss_mb": rss, "runtime": runtime}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lean_env", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="artifact directory (trained already)")
    parser.add_argument("--keep", metavar="DIR", help="make the venv here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(args.keep or Path(tmp) / "lean-venv")
        t0 = time.perf_counter()
        make_venv(venv)
        print(
            f"scratch venv with requirements-lean.txt and bnserve: {venv} ({time.perf_counter() - t0:.0f} s)"
        )
        listed = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
            capture_output=True,
            text=True,
        ).stdout
        assert not any(line.lower().startswith("torch") for line in listed.splitlines()), "torch got in"
        site = Path(
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        packaging = sum(
            size_mb(site / d) for d in ("pip", "setuptools", "pkg_resources") if (site / d).exists()
        )
        # The standard library as python:3.11-slim ships it: without the interpreter's own site-packages
        # and without the test suites (the official image deletes them).
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        env_mb, stdlib_mb = (
            size_mb(venv),
            size_mb(stdlib, skip=("site-packages", "test", "tests", "idle_test")),
        )
        print(
            f"installed environment: {env_mb:.0f} MB (of it pip/setuptools {packaging:.0f} MB); torch not installed"
        )
        print(
            f"the interpreter's standard library, without site-packages and tests: {stdlib_mb:.0f} MB ({stdlib})"
        )
        print(
            f"environment + interpreter: {env_mb + stdlib_mb:.0f} MB (target for the image: < 400 MB, with the OS base)"
        )
        for i in range(3):
            print(f"lean service from it, start {i + 1}: {serve_once(venv, Path(args.model).resolve())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
