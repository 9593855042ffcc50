"""The FastAPI app factory.

uvicorn --factory service.app:create_app        # settings from BNSERVE_* variables
python -m service --model artifacts/breast_cancer
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from models import __version__
from service.errors import error_response, install_error_handlers
from service.metrics import DRIFT_REFRESH_S, Metrics, MetricsMiddleware
from service.predictor import Predictor
from service.routes import bn_stats, drift, health, predict
from service.routes import metrics as metrics_route
from service.settings import Settings

log = logging.getLogger("bnserve")


class BNServe(FastAPI):
    """FastAPI, with ``POST /predict`` dispatched straight to ``handle_predict``.

    The hot route skips the middleware stack and the router (six ASGI layers, a fifth of a one-row
    request's CPU); it records its own request metrics and renders its own errors, as the stack would.
    Every other request, lifespan included, takes the ordinary path.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/predict":
            scope["app"] = self
            await self._predict(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        start, status = time.perf_counter(), 500
        try:
            status = await predict.handle_predict(scope, receive, send)
        except Exception:
            log.exception("unhandled error on POST /predict")
            with contextlib.suppress(Exception):  # the response may have started, or the client gone
                await error_response(500, "internal error")(scope, receive, send)
        finally:
            self.state.metrics.observe_request("/predict", "POST", status, time.perf_counter() - start)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Gives back the app; the artifact is loaded in the lifespan, never at import or here."""
    settings = settings or Settings()
    _ensure_logging(settings)
    predictor = Predictor(settings)
    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir)
    predictor.on_batch = metrics.batch_rows.observe
    predictor.on_predict_rows = metrics.predict_rows.observe

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(predictor.load)
        # What startup created (torch, the app, the network) lives as long as the process: kept out of the
        # collector, a full collection no longer walks its ~200k objects (~100 ms, a p99 spike under load).
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
        # FastAPI's native OpenTelemetry looks the providers up in os.environ on every request: 14% of a
        # one-row /predict (docs/PERFORMANCE.md). bnserve reports its own metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for router in (predict.router, bn_stats.router, drift.router, health.router, metrics_route.router):
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
