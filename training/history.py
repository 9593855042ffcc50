"""Records a run's history epoch by epoch: the curves and each BN layer's running-statistics trajectory.

    recorder = HistoryRecorder(task="classification", steps_per_epoch=8)
    fit(model, train, val, cfg, device="cpu", on_epoch=recorder)
    recorder.history().to_json()          # bytes for the artifact's history.json

The schema is ``models.history.TrainingHistory`` so the service can read it without importing training.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from models.bn import batchnorm_layers
from models.history import (
    BatchNormHistory,
    EpochRecord,
    RunningStatsPoint,
    Summary,
    TrainingHistory,
)
from models.manifest import Task


def summarize(t: torch.Tensor) -> Summary:
    """Gives back min, max and mean of ``t`` (computed in float64)."""
    t = t.detach().double()
    return Summary(min=t.min().item(), max=t.max().item(), mean=t.mean().item())


class HistoryRecorder:
    """An ``on_epoch`` hook for ``training.engine.fit`` that keeps what ``history()`` gives back."""

    def __init__(self, *, task: Task, steps_per_epoch: int) -> None:
        self.task: Task = task
        self.steps_per_epoch = steps_per_epoch
        self.epochs: list[EpochRecord] = []
        self.batchnorm: dict[str, BatchNormHistory] = {}
        self._last_mean: dict[str, torch.Tensor] = {}
        self._started = time.perf_counter()

    def __call__(self, epoch: int, model: nn.Module, train: dict[str, float], val: dict[str, float]) -> None:
        self.epochs.append(
            EpochRecord(
                epoch=epoch,
                steps=epoch * self.steps_per_epoch,
                seconds=time.perf_counter() - self._started,
                train=dict(train),
                val=dict(val),
            )
        )
        for name, bn in batchnorm_layers(model):
            if bn.running_mean is None or bn.running_var is None:
                continue  # track_running_stats=False: nothing frozen to follow
            mean = bn.running_mean.detach().double().cpu()
            var = bn.running_var.detach().double().cpu()
            previous = self._last_mean.get(name, torch.zeros_like(mean))
            change = ((mean - previous) / (var + bn.eps).sqrt()).square().mean().sqrt().item()
            self._last_mean[name] = mean
            layer = self.batchnorm.setdefault(
                name, BatchNormHistory(name=name, num_features=bn.num_features, trajectory=[])
            )
            layer.trajectory.append(
                RunningStatsPoint(
                    epoch=epoch,
                    num_batches_tracked=0 if bn.num_batches_tracked is None else int(bn.num_batches_tracked),
                    running_mean=summarize(mean),
                    running_var=summarize(var),
                    mean_change=change,
                )
            )

    def history(self) -> TrainingHistory:
        return TrainingHistory(
            task=self.task,
            metric="accuracy" if self.task == "classification" else "r2",
            steps_per_epoch=self.steps_per_epoch,
            epochs=list(self.epochs),
            batchnorm=list(self.batchnorm.values()),
        )
