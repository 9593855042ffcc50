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

import orjson
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from models import __version__
from service.errors import ServiceError
from service.http.asgi import BNServe
from service.http.auth import VIEW_ERRORS, ReadersOnly
from service.http.errors import install_error_handlers
from service.http.hot import HotState
from service.http.routes import bn_stats, drift, health, history, metadata, oip, predict, repository, ui
from service.http.routes import metrics as metrics_route
from service.http.routes.metrics import drift_monitors, feature_drifts
from service.inference.predictor import Predictor
from service.inference.repository import (
    ModelRegistry,
    RepositorySource,
    SharedOverrides,
    SingleArtifactSource,
    WorkerBoard,
)
from service.inference.versions import VersionLoader
from service.monitoring.drift import drift_monitor_for
from service.monitoring.metrics import DRIFT_REFRESH_S, Metrics
from service.settings import Settings

log = logging.getLogger("bnserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Gives back the app; the artifact is loaded in the lifespan, never at import or here."""
    settings = settings or Settings()
    _ensure_logging(settings)
    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir)
    state_dir = settings.repository_state_dir
    board = WorkerBoard(state_dir, expected=settings.workers) if state_dir is not None else None

    def changed() -> None:  # on the registry's thread, after every change
        app.state.predictor = _newest_default(registry)
        metrics.set_serving({(p.model or "", p.version) for p in registry.serving()})
        if board is not None:
            board.publish(registry.index(), registry.applied_generation)

    registry: ModelRegistry[Predictor] = ModelRegistry(
        RepositorySource(settings.repository)
        if settings.repository is not None
        else SingleArtifactSource(settings.model_dir, name=settings.model_name),
        load=VersionLoader(settings, monitor=drift_monitor_for(settings), metrics=metrics),
        default_model=settings.default_model,
        overrides=SharedOverrides(state_dir) if state_dir is not None else None,
        on_change=changed,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(lambda: registry.refresh().result())
        # What startup created (torch, the app, the network) lives as long as the process: kept out of the
        # collector, a full collection no longer walks it all (a p99 spike under load, docs/PERFORMANCE.md).
        gc.freeze()
        gc.enable()  # python -m service turns it off for the imports
        if app.state.predictor is not None:
            _announce(settings, registry, app.state.predictor)
        registry.start_polling(
            scan_every_s=settings.repository_poll_s,
            watch_every_s=WATCH_OVERRIDES_S if state_dir is not None else None,
        )
        publisher = (
            asyncio.create_task(_publish_drift(metrics, registry)) if metrics.multiprocess_dir else None
        )
        try:
            yield
        finally:
            if publisher is not None:
                publisher.cancel()
            metrics.close()
            registry.close()
            if board is not None:
                board.withdraw()

    app = BNServe(
        title="bnserve",
        version=__version__,
        description="Serves a batch-normalized network in eval mode with its frozen BN statistics.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks the providers up in os.environ on every request, a noticeable
        # share of a one-row /predict (docs/PERFORMANCE.md). bnserve reports its own metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Served by routes/ui.py with assets from this process: FastAPI's defaults load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.board = board
    # The default model's newest serving version, kept current on every change: for code and tests that
    # want "the" predictor. Requests never read it; each takes a lease from the registry.
    app.state.predictor = None
    app.state.metrics = metrics
    app.hot = HotState(settings, registry, metrics)
    install_error_handlers(app)
    app.router.routes.extend([predict.route, *oip.routes])  # their OpenAPI description: BNServe.openapi
    app.include_router(health.router)
    app.include_router(ui.router)  # the page: its script reads the JSON views, which check the read token
    app.include_router(repository.admin)
    app.include_router(oip.router)  # its probes stay open; its other routes check the read token themselves
    readers = (
        bn_stats.router,
        metadata.router,
        drift.router,
        metrics_route.router,
        history.router,
        repository.router,
    )
    for router in readers:
        app.include_router(router, dependencies=[ReadersOnly], responses=VIEW_ERRORS)
    app.mount(ui.STATIC_URL, StaticFiles(directory=ui.STATIC_DIR), name="static")
    app.mount(ui.DOCS_ASSETS_URL, StaticFiles(directory=ui.docs_assets_dir()), name="docs-assets")
    return app


WATCH_OVERRIDES_S = 0.25  # several workers: how often each looks for load/unload requests another received


def _newest_default(registry: ModelRegistry[Predictor]) -> Predictor | None:
    try:
        with registry.lease() as served:
            return served.value
    except ServiceError:
        return None


async def _publish_drift(metrics: Metrics, registry: ModelRegistry[Predictor]) -> None:
    """Multiprocess mode: keeps this worker's drift series current for scrapes that other workers answer."""
    while True:
        try:
            await asyncio.to_thread(metrics.refresh_drift, drift_monitors(registry), feature_drifts(registry))
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


def _announce(settings: Settings, registry: ModelRegistry[Predictor], predictor: Predictor) -> None:
    artifact = predictor.require_ready()
    others = [m for m in registry.models() if m != predictor.model]
    if others:
        log.info("bnserve also serves models %s (GET /models)", others)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}"
    row = artifact.manifest.canary.inputs[0]
    cells = (orjson.dumps(v).decode() if v is None or isinstance(v, str | bool) else f"{v:.6g}" for v in row)
    body = '{"instances": [[' + ", ".join(cells) + "]]}"
    log.info(
        "bnserve ready: model %r version %s (%s, %d features), loaded in %.2f s, serving at %s\n"
        "  curl -s %s/predict -H 'Content-Type: application/json' -d '%s'\n"
        "  curl -s '%s/bn-stats?vectors=false'\n"
        "  page: %s/   docs: %s/docs",
        predictor.model,
        predictor.version,
        artifact.manifest.task,
        len(artifact.manifest.feature_names),
        predictor.load_seconds or 0.0,
        url,
        url,
        body,
        url,
        url,
        url,
    )
