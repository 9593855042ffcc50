"""Serve an artifact or a model repository: ``python -m service --model DIR`` or ``--repository DIR``.

Every option also reads from its ``BNSERVE_*`` variable (see service/settings.py); flags win.
"""

from __future__ import annotations

import gc

# Startup allocates a great many long-lived objects (torch, FastAPI, the network); collecting while they are
# made only slows the start. The lifespan freezes them and turns collection back on once the model is ready.
gc.disable()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import uvicorn  # noqa: E402

from service.settings import Settings  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    parser.add_argument("--model", dest="model_dir", help="artifact directory (BNSERVE_MODEL_DIR)")
    parser.add_argument(
        "--repository", help="model repository DIR/<model>/<version>/ instead of --model (BNSERVE_REPOSITORY)"
    )
    parser.add_argument(
        "--model-name", help="name served under /v2/models/NAME (BNSERVE_MODEL_NAME; default: the manifest's)"
    )
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
    with _shared_state(settings):
        _serve(settings)
    return 0


@contextlib.contextmanager
def _shared_state(settings: Settings) -> Iterator[None]:
    """Several workers: a directory they share, so a load or unload request reaches every one of them
    (docs/REPOSITORY.md), made for this run unless BNSERVE_REPOSITORY_STATE_DIR names one."""
    if settings.workers == 1 or settings.repository_state_dir is not None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="bnserve-state-") as state_dir:
        os.environ["BNSERVE_REPOSITORY_STATE_DIR"] = state_dir
        yield


def _serve(settings: Settings) -> None:
    uvicorn.run(
        "service.http.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # X-Forwarded-For only ever fed the client address of the access log: without it, uvicorn's proxy
        # middleware is one wrapper less on every request (docs/PERFORMANCE.md, profile of one-row requests).
        proxy_headers=settings.access_log,
        loop="uvloop",
        http=_http_protocol(settings),
    )


def _http_protocol(settings: Settings) -> type[asyncio.Protocol] | str:
    """Gives back uvicorn's HTTP protocol: httptools, with the hot routes answered straight from its parser
    unless BNSERVE_HTTP_FAST_PATH is off (service/http/protocol.py)."""
    if not settings.http_fast_path:
        return "httptools"
    from service.http.protocol import HotPathProtocol

    return HotPathProtocol


if __name__ == "__main__":
    sys.exit(main())
