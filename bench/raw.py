"""The Python HTTP limit: a raw ASGI app (no framework) that answers every POST /predict with a constant.

python -m bench.raw --port 8003

uvicorn with uvloop and httptools, as bnserve runs; the request body is read (as a server must) and dropped.
Nothing a Python service on this stack does per request can cost less, so bnserve's requests/s divided by
this one's says how much of the limit it reaches.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from bench.bare import ANSWER, serve

BODY = orjson.dumps(ANSWER)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
READY = b'{"status":"ready"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # read the whole body, as any real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    body = BODY if scope["path"] == "/predict" else READY
    headers = HEADERS if body is BODY else [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw", description="the raw ASGI constant endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    serve(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
