"""The reference service, written the way the tutorials do: a sync FastAPI endpoint, a pydantic
``list[list[float]]`` body, one forward per request. Kept for the benchmark only; the product never uses it.

    python -m bench.naive --model artifacts/breast_cancer --port 8001
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from models import load_artifact


class PredictRequest(BaseModel):
    instances: list[list[float]]


def create_app(model_dir: str) -> FastAPI:
    artifact = load_artifact(model_dir)
    model, labels = artifact.model, artifact.manifest.class_labels
    app = FastAPI()

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict:
        x = torch.tensor(request.instances, dtype=torch.float32)
        with torch.no_grad():
            out = model(x)
        if labels is None:
            return {"predictions": [{"value": v} for v in out[:, 0].tolist()]}
        probs = torch.softmax(out, dim=1).tolist()
        return {
            "predictions": [
                {
                    "label": labels[max(range(len(p)), key=p.__getitem__)],
                    "probabilities": dict(zip(labels, p, strict=True)),
                }
                for p in probs
            ]
        }

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.naive", description="the tutorial-style reference service"
    )
    parser.add_argument("--model", required=True, help="artifact directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same thread budget bnserve gets
    uvicorn.run(
        create_app(args.model),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",  # what uvicorn[standard] picks by default anyway; the same for all three services
        http="httptools",
    )


if __name__ == "__main__":
    main()
