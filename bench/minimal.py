"""The least a Python model server on bnserve's stack does per request: the limit for a served model.

python -m bench.minimal --model DIR --port 8005

A raw ASGI app (uvicorn, uvloop, httptools, as bnserve runs) that parses ``{"instances": [[...], ...]}`` with
orjson into float32, merges concurrent requests into one forward pass as bnserve's batcher does (the
first request schedules the batch for the next turn of the event loop), computes the folded network with
numpy (``models.numpy_net``, the lean runtime's) and answers bnserve's JSON with orjson. Its answers are
checked like bnserve's.

What it leaves out is everything a served model needs beyond that: no validation past "numbers, the right
count, finite" (a bad body gets a bare 422), no metrics, no drift monitor, no model repository or version
lease, no auth, no bulk path, no Open Inference Protocol. So bnserve's requests/s divided by this one's
says what those cost, and this one's divided by the raw constant endpoint's says how far any model served
from Python on this stack gets from the HTTP limit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.bare import serve
from bench.raw import app as raw_app
from models.lean import fold, load_lean_artifact
from models.numpy_net import softmax
from service.inference.tuning import keep_freed_memory, use_blas_threads

JSON = [(b"content-type", b"application/json")]


def create_app(model_dir: Path) -> Any:
    keep_freed_memory()
    use_blas_threads(1)
    artifact = load_lean_artifact(model_dir)
    network, _ = fold(artifact)
    labels = artifact.manifest.class_labels
    n = len(artifact.manifest.feature_names)
    pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
    scheduled = False

    def flush() -> None:
        nonlocal scheduled
        scheduled = False
        batch = pending[:]
        pending.clear()
        x = batch[0][0] if len(batch) == 1 else np.concatenate([rows for rows, _ in batch])
        out = network(x)
        out = softmax(out) if labels is not None else out
        start = 0
        for rows, future in batch:
            if not future.done():
                future.set_result(out[start : start + len(rows)])
            start += len(rows)

    def answer(out: np.ndarray) -> bytes:
        if labels is None:
            return orjson.dumps({"predictions": [{"value": v} for v in out[:, 0].tolist()]})
        best = out.argmax(axis=1).tolist()
        return orjson.dumps(
            {
                "predictions": [
                    {"label": labels[b], "probabilities": dict(zip(labels, p, strict=True))}
                    for b, p in zip(best, out.tolist(), strict=True)
                ]
            }
        )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal scheduled
        if scope["type"] == "lifespan" or scope["path"] != "/predict":
            await raw_app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            with np.errstate(over="ignore"):
                rows = np.array(orjson.loads(b"".join(chunks))["instances"], dtype=np.float32)
            if rows.ndim != 2 or rows.shape[1] != n or not math.isfinite(rows.sum(dtype=np.float64)):
                raise ValueError
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
            status, body = 422, b'{"error":"expected {\\"instances\\": rows of finite numbers}"}'
        else:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[np.ndarray] = loop.create_future()
            pending.append((rows, future))
            if not scheduled:
                scheduled = True
                loop.call_soon(flush)
            status, body = 200, answer(await future)
        headers = [*JSON, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.minimal", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="artifact directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8005)
    args = parser.parse_args()
    serve(create_app(Path(args.model)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
