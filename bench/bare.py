"""The HTTP ceiling: a bare FastAPI endpoint that answers every POST /predict with a constant.

python -m bench.bare --port 8002
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI

ANSWER = {"predictions": [{"label": "benign", "probabilities": {"malignant": 0.0, "benign": 1.0}}]}


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict() -> dict:
        return ANSWER

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare", description="the constant-returning endpoint"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    serve(create_app(), host=args.host, port=args.port)


def serve(app: Any, *, host: str, port: int) -> None:
    """Runs ``app`` as bnserve runs: one uvicorn worker, uvloop and httptools, no access log."""
    uvicorn.run(
        app, host=host, port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


if __name__ == "__main__":
    main()
