"""The FastAPI app factory.

    uvicorn --factory service.app:create_app        # settings from BNSERVE_* variables
    python -m service --model artifacts/breast_cancer
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from models import __version__
from service.errors import install_error_handlers
from service.predictor import Predictor
from service.routes import bn_stats, health, predict
from service.settings import Settings

log = logging.getLogger("bnserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Gives back the app; the artifact is loaded in the lifespan, never at import or here."""
    settings = settings or Settings()
    predictor = Predictor(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(predictor.load)
        if predictor.ready:
            _announce(settings, predictor)
        try:
            yield
        finally:
            predictor.close()

    app = FastAPI(
        title="bnserve",
        version=__version__,
        description="Serves a batch-normalized network in eval mode with its frozen BN statistics.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.predictor = predictor
    install_error_handlers(app)
    for router in (predict.router, bn_stats.router, health.router):
        app.include_router(router)
    return app


def _announce(settings: Settings, predictor: Predictor) -> None:
    artifact = predictor.require_ready()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}"
    row = artifact.manifest.canary.inputs[0]
    body = '{"instances": [[' + ", ".join(f"{v:.6g}" for v in row) + "]]}"
    log.info(
        "bnserve ready: model %r (%s, %d features), loaded in %.2f s, serving at %s\n"
        "  curl -s %s/predict -H 'Content-Type: application/json' -d '%s'\n"
        "  curl -s '%s/bn-stats?vectors=false'\n"
        "  docs: %s/docs",
        artifact.manifest.name,
        artifact.manifest.task,
        len(artifact.manifest.feature_names),
        predictor.load_seconds or 0.0,
        url,
        url,
        body,
        url,
        url,
    )
