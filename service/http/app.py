"""The FastAPI app factory.

uvicorn --factory service.http.app:create_app   # settings from BNSERVE_* variables
python -m service --model artifacts/breast_cancer
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from models import __version__
from service.http.asgi import BNServe
from service.http.errors import install_error_handlers
from service.http.routes import bn_stats, drift, health, metadata, predict
from service.http.routes import metrics as metrics_route
from service.inference.predictor import Predictor
from service.monitoring.drift import drift_monitor_for
from service.monitoring.metrics import DRIFT_REFRESH_S, Metrics
from service.settings import Settings

log = logging.getLogger("bnserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Gives back the app; the artifact is loaded in the lifespan, never at import or here."""
    settings = settings or Settings()
    _ensure_logging(settings)
    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir)
    predictor = Predictor(
        settings,
        monitor=drift_monitor_for(settings),
        on_batch=metrics.batch_rows.observe,
        on_predict_rows=metrics.predict_rows.observe,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(predictor.load)
        # What startup created (torch, the app, the network) lives as long as the process: kept out of the
        # collector, a full collection no longer walks it all (a p99 spike under load, docs/PERFORMANCE.md).
        gc.freeze()
        gc.enable()  # python -m service turns it off for the imports
        if predictor.ready:
            metrics.set_model(predictor.require_ready())
            _announce(settings, predictor)
        publisher = (
            asyncio.create_task(_publish_drift(metrics, predictor)) if metrics.multiprocess_dir else None
        )
        try:
            yield
        finally:
            if publisher is not None:
                publisher.cancel()
            metrics.close()
            predictor.close()

    app = BNServe(
        title="bnserve",
        version=__version__,
        description="Serves a batch-normalized network in eval mode with its frozen BN statistics.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks the providers up in os.environ on every request, a noticeable
        # share of a one-row /predict (docs/PERFORMANCE.md). bnserve reports its own metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.metrics = metrics
    install_error_handlers(app)
    app.router.routes.append(predict.route)  # its OpenAPI description: BNServe.openapi
    for router in (bn_stats.router, metadata.router, drift.router, health.router, metrics_route.router):
        app.include_router(router)
    return app


async def _publish_drift(metrics: Metrics, predictor: Predictor) -> None:
    """Multiprocess mode: keeps this worker's drift series current for scrapes that other workers answer."""
    while True:
        try:
            await asyncio.to_thread(metrics.refresh_drift, predictor.drift)
        except Exception:
            log.exception("could not publish the drift series; trying again in %.0f s", DRIFT_REFRESH_S)
        await asyncio.sleep(DRIFT_REFRESH_S)


def _ensure_logging(settings: Settings) -> None:
    """Gives bnserve's logger a handler when nothing configured logging (the uvicorn factory form), so the
    readiness banner and load errors are printed there too."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(settings.log_level.upper())


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
