"""Helpers the service tests share: an app served from an artifact directory, a loaded predictor, its
manifest, rows like the training data, concurrent posts. Import them: ``from tests.service.serving import ...``."""

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

from service.http.app import create_app
from service.inference.predictor import Predictor
from service.monitoring.drift import drift_monitor_for
from service.settings import Settings

TEST_ADMIN_TOKEN = "test-admin-token"


@contextmanager
def serving(model_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """Yields a client of the app serving ``model_dir``, lifespan run; CPU so outputs compare exactly. The
    client sends ``TEST_ADMIN_TOKEN``, the app's admin token, so admin endpoints (drift reset) answer."""
    settings.setdefault("device", "cpu")
    settings.setdefault("admin_token", TEST_ADMIN_TOKEN)
    app = create_app(Settings(model_dir=model_dir, **settings))
    with TestClient(app, headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}) as client:
        yield client


def rows_like_training(
    source: Path | TestClient, count: int, *, seed: int = 0, shift: float = 0.0
) -> np.ndarray:
    """Gives back ``count`` float32 rows spread like the training data: per feature, the training mean plus
    ``N(shift, 1)`` training standard deviations. ``source``: the artifact directory, or a client serving it."""
    artifact_dir = source.app.state.settings.model_dir if isinstance(source, TestClient) else source  # type: ignore[attr-defined]
    std = manifest_of(artifact_dir)["input_standardization"]
    mean, scale = np.array(std["mean"]), np.array(std["std"])
    z = np.random.default_rng(seed).normal(shift, 1.0, size=(count, len(mean)))
    return (mean + z * scale).astype(np.float32)


def loaded_predictor(model_dir: Path, **settings: Any) -> Predictor:
    """Gives back a predictor of ``model_dir`` loaded and ready, with its drift monitor wired as the app
    wires it (service/http/app.py); CPU so outputs compare exactly."""
    settings.setdefault("device", "cpu")
    s = Settings(model_dir=model_dir, **settings)
    predictor = Predictor(s, monitor=drift_monitor_for(s))
    predictor.load()
    assert predictor.ready, predictor.error
    return predictor


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
