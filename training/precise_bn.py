"""Precise BN statistics: each BN layer's population mean and variance over the whole training split.

    gaps = recompute_bn_statistics(model, train_ds.features, device=device)   # running_mean/var replaced
    stats = finish_bn_statistics(cfg, model, train_ds, val_ds, metrics, device=device)  # what train() calls

After training, with the weights fixed and the network in eval mode (dropout off), BN layers are visited in
network order. Layer ``k`` is measured on what it sees at inference: the rows of the training split passed
through the network, with layers ``1 .. k-1`` already using their recomputed statistics. Its new statistics
are the per-channel mean and the population variance (divided by the count, not count - 1) over every value
it sees: N rows for BatchNorm1d, N·H·W values per channel for BatchNorm2d. They are exactly what train-mode
BN would normalize by if the whole training split were one batch. docs/ARTIFACT.md has the definition.

Each rank measures its share of the rows (every ``world_size``-th) and the per-channel float64 sums are
summed over ranks, so the result does not depend on the number of ranks or the sharding beyond float64
rounding. ``num_batches_tracked`` keeps counting the training batches.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from models import batchnorm_layers
from models.manifest import BNStatistics, LayerStatisticsGap
from training.config import TrainConfig
from training.data import Dataset
from training.distributed import ALONE, Ranks
from training.engine import DeviceSplit, evaluate, loss_function

CHUNK_ROWS = 4096  # rows per forward pass: bounds memory on large CSVs; the sums do not depend on it


def finish_bn_statistics(
    cfg: TrainConfig,
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    metrics: dict[str, float],
    *,
    device: torch.device,
    ranks: Ranks = ALONE,
) -> BNStatistics:
    """Gives back the manifest's ``bn_statistics``; with ``cfg.bn_stats`` precise, first recomputes them and
    updates ``metrics`` in place: ``train_*`` and ``val_*`` then describe the exported network, and the
    EMA's validation metrics are kept as ``ema_val_*``."""
    if cfg.bn_stats == "ema":
        return BNStatistics(kind="ema", world_size=ranks.world_size)
    gaps = recompute_bn_statistics(model, train.features, device=device, ranks=ranks)
    loss_fn = loss_function(model, train.task)
    metrics |= {f"ema_{k}": v for k, v in metrics.items() if k.startswith("val_")}
    for prefix, split in (("train", train), ("val", val)):
        scores = evaluate(model, loss_fn, DeviceSplit.from_dataset(split, device))
        metrics |= {f"{prefix}_{k}": v for k, v in scores.items()}
    return BNStatistics(kind="precise", world_size=ranks.world_size, ema_gap=gaps)


class _Measured(Exception):
    """Stops the forward pass once the layer being measured has seen its input."""


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module,
    features: np.ndarray,
    *,
    device: torch.device,
    ranks: Ranks = ALONE,
    chunk_rows: int = CHUNK_ROWS,
) -> list[LayerStatisticsGap]:
    """Gives back, per BN layer, how far its training EMA was from the precise statistics it now holds.

    ``features`` are the training split's raw rows (the same on every rank); ``model`` is left in eval mode.
    """
    model.eval()
    rows = torch.from_numpy(features)[ranks.rank :: ranks.world_size]  # this rank's share
    gaps = []
    for name, bn in batchnorm_layers(model):
        assert bn.running_mean is not None and bn.running_var is not None
        ema_mean, ema_var = bn.running_mean.double().clone(), bn.running_var.double().clone()
        # Sums of (x - shift) keep E[x²] - E[x]² from cancelling; the EMA is the same on every rank.
        shift = ema_mean
        sums = _shifted_sums(model, bn, rows, shift, device=device, chunk_rows=chunk_rows)
        count, sum_d, sum_d2 = ranks.sum(sums)
        mean_d = sum_d / count
        var = (sum_d2 / count - mean_d.square()).clamp_min(0)
        bn.running_mean.copy_(shift + mean_d)
        bn.running_var.copy_(var)
        gaps.append(statistics_gap(name, ema_mean, ema_var, shift + mean_d, var, bn.eps))
    return gaps


def _shifted_sums(
    model: nn.Module,
    bn: nn.Module,
    rows: torch.Tensor,
    shift: torch.Tensor,
    *,
    device: torch.device,
    chunk_rows: int,
) -> torch.Tensor:
    """Gives back (3, C) float64: per channel of ``bn``'s input over ``rows``, the count, Σd and Σd²
    of d = x - shift. Each forward pass stops at ``bn``."""
    sums = torch.zeros(3, len(shift), dtype=torch.float64, device=device)

    def accumulate(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]  # (B, C) or (B, C, H, W)
        d = x.transpose(0, 1).reshape(x.shape[1], -1).double() - shift[:, None]  # (C, values)
        sums[0] += d.shape[1]
        sums[1] += d.sum(dim=1)
        sums[2] += d.square().sum(dim=1)
        raise _Measured

    handle = bn.register_forward_pre_hook(accumulate)
    try:
        for chunk in rows.split(chunk_rows):
            with contextlib.suppress(_Measured):
                model(chunk.to(device))
    finally:
        handle.remove()
    return sums


def statistics_gap(
    layer: str,
    ema_mean: torch.Tensor,
    ema_var: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
) -> LayerStatisticsGap:
    """Gives back the largest per-channel distances of the EMA from the precise statistics (float64)."""
    shift = (ema_mean - mean).abs() / (var + eps).sqrt()
    log_ratio = ((ema_var + eps) / (var + eps)).log().abs()
    return LayerStatisticsGap(
        layer=layer,
        max_abs_mean_shift=float(shift.max()),
        max_abs_log_var_ratio=float(log_ratio.max()),
    )
