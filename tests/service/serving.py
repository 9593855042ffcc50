"""Helpers the service tests share: an app served from an artifact directory, and its manifest."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@contextmanager
def serving(model_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """Yields a client of the app serving ``model_dir``, lifespan run; CPU so outputs compare exactly."""
    settings.setdefault("device", "cpu")
    with TestClient(create_app(Settings(model_dir=model_dir, **settings))) as client:
        yield client


def rows_like_training(client: TestClient, count: int, seed: int = 0) -> np.ndarray:
    """Gives back ``count`` float32 rows spread like the training data (mean ± 3 std per feature)."""
    std = client.get("/bn-stats").json()["input_standardization"]
    z = np.random.default_rng(seed).uniform(-3, 3, size=(count, len(std["mean"])))
    return (np.array(std["mean"]) + z * np.array(std["std"])).astype(np.float32)


def manifest_of(artifact_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((artifact_dir / "manifest.json").read_text())
    return manifest


def post_concurrently(client: TestClient, path: str, bodies: list[Any]) -> list[httpx.Response]:
    """Gives back the responses to ``bodies``, all posted at once on the app's own event loop.

    Concurrent requests are what a real server sees: the micro-batcher merges their rows into shared
    forward passes. In-process, this is also several times faster than one TestClient call after another.
    """

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bnserve") as http:
            return await asyncio.gather(*(http.post(path, json=body) for body in bodies))

    assert client.portal is not None, "use the client inside `with TestClient(app) as client`"
    return client.portal.call(post_all)
