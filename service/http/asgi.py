"""The ASGI entry: every HTTP request is timed and counted here, and the hot routes go straight to their handlers.

The hot routes (POST /predict and the Open Inference Protocol's POST /v2/models/.../infer) skip FastAPI's
middleware stack and router (several ASGI layers, a large share of a one-row request's CPU); every other
request, lifespan included, takes the ordinary path. This is the one place that
records request metrics, for both.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from service.http.errors import error_response
from service.http.hot import HotRoute, HotState
from service.http.routes import oip, predict

log = logging.getLogger("bnserve")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class BNServe(FastAPI):
    """FastAPI, with the hot routes dispatched straight to their handlers (``hot_route``) and request metrics
    kept.

    ``app.state.metrics`` (service/monitoring/metrics.py) gets every HTTP request by route template
    ("unmatched" for a path no route has), method and status, timed until the response is sent.
    ``app.hot`` is what the hot routes read of the app (set by ``create_app``).
    """

    hot: HotState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # 500: what the client gets when nothing was sent
        hot = hot_route(scope["method"], scope["path"])
        if hot is not None:
            handler, route = hot
            scope["app"] = self
            try:
                status = await handler(scope, receive, send)
            except Exception:
                log.exception("unhandled error on POST %s", route)
                with contextlib.suppress(Exception):  # the response may have started, or the client gone
                    await error_response(500, "internal error")(scope, receive, send)
            finally:
                self.hot.metrics.observe_request(route, "POST", status, time.perf_counter() - start)
            return

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, send_and_note_status)
        finally:
            # The router has put the matched route in the scope; unmatched paths share one label.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.hot.metrics.observe_request(route, method, status, time.perf_counter() - start)

    def openapi(self) -> dict[str, Any]:
        """Gives back FastAPI's schema of the routes, with the hot routes as ``predict.Predict`` and
        ``oip.Infer`` describe them: /predict for the loaded model once it is ready (kept from then on),
        generic before."""
        if self.openapi_schema is None:
            schema = super().openapi()
            self.openapi_schema = None  # super() keeps its own; this one is kept only once the model is known
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            # The default model's rows (app.state.predictor: its newest version, None until one is loaded).
            predictor, settings = self.state.predictor, self.state.settings
            ready = predictor is not None and predictor.ready
            features = predictor.feature_names if ready else None
            kinds = predictor.encoder.kinds if ready and predictor.encoder is not None else None
            path = predict.Predict.openapi(
                components, feature_names=features, kinds=kinds, max_rows=settings.max_rows
            )
            schema["paths"] = {predict.PATH: path, **oip.Infer.openapi(components), **schema["paths"]}
            if ready:
                self.openapi_schema = schema
            return schema
        return self.openapi_schema


def hot_route(method: str, path: str) -> tuple[HotRoute[Any], str] | None:
    """Gives back (route, its route template) of a request for a hot route: POST /predict or an Open Inference
    Protocol inference; None for any other request, which takes FastAPI's path."""
    if method != "POST":
        return None
    if path == predict.PATH:
        return predict.predict, predict.PATH
    target = oip.infer_target(path)
    if target is None:
        return None
    return oip.infer, oip.INFER_ROUTES[0 if target[1] is None else 1]
