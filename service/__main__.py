"""Serve an artifact: ``python -m service --model artifacts/breast_cancer [--host H] [--port P]``.

Every option also reads from its ``BNSERVE_*`` variable (see service/settings.py); flags win.
"""

from __future__ import annotations

import gc

# Startup allocates ~200k long-lived objects (torch, FastAPI, the network); collecting while they are made
# only slows the start. The lifespan freezes them and turns collection back on once the model is ready.
gc.disable()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import uvicorn  # noqa: E402

from service.settings import Settings  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    parser.add_argument("--model", dest="model_dir", help="artifact directory (BNSERVE_MODEL_DIR)")
    parser.add_argument("--host", help="address to bind (BNSERVE_HOST)")
    parser.add_argument("--port", type=int, help="port (BNSERVE_PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (BNSERVE_WORKERS)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    # Worker processes build their own Settings from the environment: hand the flags down that way.
    for key, value in overrides.items():
        os.environ[f"BNSERVE_{key.upper()}"] = str(value)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(message)s")
    uvicorn.run(
        "service.http.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
        loop="uvloop",
        http="httptools",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
