"""The scaling runs: every variant at every learning rate of one grid, several seeds each.

    grid = run_grid(train, val, base_cfg, lrs=(1e-3, 1e-2), seeds=(0, 1, 2), target=0.95)
    best = best_runs(grid)               # variant -> the runs at its best learning rate

Each run trains with the project's own loop (``training.engine.fit``, AdamW) and records the curves with
``HistoryRecorder`` and, through a gradient hook on the first Linear's weight, the mean |gradient| of the
columns that see the large-scale features over that of the small-scale ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from training.config import TrainConfig
from training.data import Dataset
from training.engine import fit, steps_per_epoch
from training.errors import TrainingDivergedError
from training.experiment.variants import VARIANTS, Variant, build_variant, scale_groups
from training.history import HistoryRecorder


@dataclass
class Run:
    variant: str
    lr: float
    seed: int
    steps_per_epoch: int
    train_loss: list[float] = field(default_factory=list)  # per epoch, running, training mode
    val_loss: list[float] = field(default_factory=list)  # per epoch, eval mode
    val_accuracy: list[float] = field(default_factory=list)
    grad_ratio: list[float] = field(default_factory=list)  # per epoch: large-scale / small-scale columns
    grad_ratio_overall: float = math.nan  # over every step of the run
    diverged: str | None = None  # the error message when training produced NaN/inf

    @property
    def final_accuracy(self) -> float:
        """The last epoch's validation accuracy; 0 for a run that diverged."""
        return 0.0 if self.diverged or not self.val_accuracy else self.val_accuracy[-1]

    def epochs_to(self, target: float) -> int | None:
        """Gives back the first epoch whose validation accuracy reached ``target``, or None."""
        return next((i + 1 for i, a in enumerate(self.val_accuracy) if a >= target), None)


class GradientProbe:
    """Sums |dL/dW| per input column of a weight (O, F) over the steps; ``end_epoch`` closes an epoch."""

    def __init__(self, weight: torch.Tensor, small: np.ndarray, large: np.ndarray) -> None:
        self.small, self.large = torch.from_numpy(small), torch.from_numpy(large)
        self.epoch_sum = torch.zeros(weight.shape[1], dtype=torch.float64)
        self.total_sum = torch.zeros_like(self.epoch_sum)
        self.handle = weight.register_hook(self._add)

    def _add(self, grad: torch.Tensor) -> None:
        self.epoch_sum += grad.detach().abs().sum(dim=0).double().cpu()  # (F,)

    def ratio(self, sums: torch.Tensor) -> float:
        return (sums[self.large].mean() / sums[self.small].mean()).item()

    def end_epoch(self) -> float:
        ratio = self.ratio(self.epoch_sum)
        self.total_sum += self.epoch_sum
        self.epoch_sum.zero_()
        return ratio


def first_linear(model: nn.Module) -> nn.Linear:
    return next(m for m in model.modules() if isinstance(m, nn.Linear))


def run_one(variant: Variant, cfg: TrainConfig, train: Dataset, val: Dataset) -> Run:
    """Gives back the record of one training run of ``variant`` as ``cfg`` says (lr, seed, epochs)."""
    model = build_variant(variant, cfg, train)
    run = Run(variant.name, cfg.lr, cfg.seed, steps_per_epoch(len(train), cfg.batch_size))
    recorder = HistoryRecorder(task=train.task, steps_per_epoch=run.steps_per_epoch)
    probe = GradientProbe(first_linear(model).weight, *scale_groups(train.features.shape[1]))

    def on_epoch(epoch: int, model: nn.Module, running: dict[str, float], val_m: dict[str, float]) -> None:
        recorder(epoch, model, running, val_m)
        run.train_loss.append(running["loss"])
        run.val_loss.append(val_m["loss"])
        run.val_accuracy.append(val_m["accuracy"])
        run.grad_ratio.append(probe.end_epoch())

    try:
        fit(model, train, val, cfg, device="cpu", on_epoch=on_epoch)
    except TrainingDivergedError as e:
        run.diverged = str(e)
    finally:
        probe.handle.remove()
    if probe.total_sum.sum() > 0:
        run.grad_ratio_overall = probe.ratio(probe.total_sum)
    return run


Grid = dict[str, dict[float, list[Run]]]  # variant -> lr -> one run per seed


def run_grid(
    train: Dataset,
    val: Dataset,
    cfg: TrainConfig,
    *,
    lrs: tuple[float, ...],
    seeds: tuple[int, ...],
    variants: tuple[Variant, ...] = VARIANTS,
    on_run: Callable[[Variant, float, list[Run]], None] | None = None,
) -> Grid:
    """Gives back every run: each variant at each learning rate with each seed (which seeds the
    initialization and the batch order; the split stays the same)."""
    grid: Grid = {}
    for variant in variants:
        for lr in lrs:
            runs = [run_one(variant, replace(cfg, lr=lr, seed=seed), train, val) for seed in seeds]
            grid.setdefault(variant.name, {})[lr] = runs
            if on_run is not None:
                on_run(variant, lr, runs)
    return grid


def best_lr(by_lr: dict[float, list[Run]], target: float) -> float:
    """Gives back the learning rate with the best mean final validation accuracy; a tie goes to the one
    that reached ``target`` in fewer epochs on average (a run that never did counts one epoch past the end)."""

    def key(lr: float) -> tuple[float, float]:
        runs = by_lr[lr]
        budget = max(len(r.val_accuracy) for r in runs) + 1
        epochs = [r.epochs_to(target) or budget for r in runs]
        return (round(float(np.mean([r.final_accuracy for r in runs])), 6), -float(np.mean(epochs)))

    return max(by_lr, key=key)


def best_runs(grid: Grid, target: float) -> dict[str, list[Run]]:
    """Gives back, for each variant, its runs at its best learning rate."""
    return {name: by_lr[best_lr(by_lr, target)] for name, by_lr in grid.items()}
