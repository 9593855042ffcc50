"""Loading one version of a model for the repository: a ``Predictor`` of its artifact, verified, warmed up.

    load = VersionLoader(settings, monitor=drift_monitor_for(settings), metrics=metrics)
    predictor = load("wine", 2, Path("repo/wine/2"))   # raises VersionRefused with the reason

The registry (service/inference/repository) calls it on its background thread, never on a request's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.reader import canary_inputs
from service.inference.predictor import Predictor
from service.monitoring.drift import MonitorFactory
from service.monitoring.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("bnserve")

WARM_UP_ROWS = (1, 256)  # the first forward at each size allocates what later ones reuse


class VersionRefused(Exception):
    """The version failed verification; the message is the reason the index shows."""


class VersionLoader:
    def __init__(self, settings: Settings, *, monitor: MonitorFactory | None, metrics: Metrics) -> None:
        self.settings = settings
        self.monitor = monitor
        self.metrics = metrics

    def __call__(self, model: str, version: int, path: Path) -> Predictor:
        series = self.metrics.for_version(model, str(version))
        predictor = Predictor(
            self.settings,
            artifact_dir=path,
            model=model,
            version=str(version),
            monitor=self.monitor,
            on_batch=series.batch_rows.observe,
            on_predict_rows=series.predict_rows.observe,
        )
        predictor.load()
        if not predictor.ready:
            raise VersionRefused(predictor.error)
        warm_up(predictor)
        self.metrics.set_model(predictor.require_ready(), model=model, version=str(version))
        log.info(
            "model %r version %d ready in %.2f s (artifact %s)",
            model,
            version,
            predictor.load_seconds or 0.0,
            predictor.artifact_sha256[:12],
        )
        return predictor


def warm_up(predictor: Predictor) -> None:
    """Runs the serving network on the canary rows at each of ``WARM_UP_ROWS``, outside the runtime, so
    the drift window never sees these rows and the first request pays no first-call costs."""
    artifact = predictor.require_ready()
    canary = canary_inputs(artifact.manifest, artifact.path)  # raw rows encoded, with preprocessing
    batches = [np.resize(canary, (rows, *canary.shape[1:])) for rows in WARM_UP_ROWS]
    if predictor.serving_model is None:  # the lean runtime: its numpy network, without the drift observer
        network = predictor.runtime.network  # type: ignore[union-attr]
        for rows in batches:
            network(rows)
        return
    import torch  # only the torch runtime gets here: the lean one never imports torch

    with torch.inference_mode():
        for rows in batches:
            predictor.serving_model(torch.from_numpy(rows).to(predictor.device))
