"""The inference hand-over: the same rows predicted with batch statistics (training-mode BN) and with the
frozen EMA statistics (eval mode), in batches of 1 to 256 rows.

    rows = handover(model, features, labels, batch_sizes=(1, 2, 4, ..., 256))   # one HandoverRow each

Training-mode BN normalizes each row with the mean and variance of the batch it arrived in, so a row's
prediction depends on its neighbours, and a batch of one row is normalized to exactly BN's ``bias``:
every single row then gets the same answer. PyTorch refuses that case outright (``single_row_error``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class HandoverRow:
    batch_size: int
    batches: int
    tv_distance: float  # mean over rows of 0.5 * sum |p_batch_stats - p_eval|: 0 = same, 1 = disjoint
    label_agreement: float  # share of rows whose predicted class is the same in both modes
    accuracy_batch_stats: float
    accuracy_eval: float
    spread_batch_stats: float  # std over rows of the probabilities, mean over classes (0: one answer for all)
    spread_eval: float
    eval_max_diff: float  # max |p_eval(batched) - p_eval(one row at a time)|: batch independence


def batch_statistics_forward(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Gives back ``model(x)`` with every BN normalizing by the batch's own mean and biased variance, as
    training mode does, without touching the running statistics.

    Written out rather than calling ``model.train()``: that would update the running statistics, and
    PyTorch raises for a batch of one row, which is the case this shows.
    """
    for module in model:
        if isinstance(module, _BatchNorm):
            dims = [0, *range(2, x.ndim)]  # every axis but the channels
            shape = (1, -1) + (1,) * (x.ndim - 2)
            mean = x.mean(dim=dims, keepdim=True)
            var = x.var(dim=dims, unbiased=False, keepdim=True)
            x = (x - mean) / torch.sqrt(var + module.eps)
            if module.affine:
                x = x * module.weight.reshape(shape) + module.bias.reshape(shape)
        else:
            x = module(x)
    return x


def single_row_error(model: nn.Module, row: torch.Tensor) -> str | None:
    """Gives back what PyTorch says when a training-mode copy of ``model`` gets a single row (None if it
    answers)."""
    probe = copy.deepcopy(model).train()
    try:
        with torch.no_grad():
            probe(row[:1])
    except ValueError as e:
        return str(e)
    return None


def _spread(p: torch.Tensor) -> float:
    return p.std(dim=0).mean().item() if len(p) > 1 else 0.0


@torch.inference_mode()
def handover(
    model: nn.Sequential,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> list[HandoverRow]:
    """Gives back one row per batch size: ``features`` (N, F) cut into consecutive batches of that size
    (N a multiple of each), predicted both ways. ``model`` must be a trained classifier in eval mode."""
    model.eval()
    n = len(features)
    bad = [b for b in batch_sizes if n % b]
    if bad:
        raise ValueError(f"{n} rows cannot be cut into whole batches of {bad}")
    p_one = torch.cat([model(x).softmax(dim=1) for x in features.split(1)])  # (N, K), one row at a time
    rows = []
    for b in batch_sizes:
        p_eval = torch.cat([model(x).softmax(dim=1) for x in features.split(b)])
        p_batch = torch.cat([batch_statistics_forward(model, x).softmax(dim=1) for x in features.split(b)])
        rows.append(
            HandoverRow(
                batch_size=b,
                batches=n // b,
                tv_distance=(0.5 * (p_batch - p_eval).abs().sum(dim=1)).mean().item(),
                label_agreement=(p_batch.argmax(dim=1) == p_eval.argmax(dim=1)).double().mean().item(),
                accuracy_batch_stats=(p_batch.argmax(dim=1) == labels).double().mean().item(),
                accuracy_eval=(p_eval.argmax(dim=1) == labels).double().mean().item(),
                spread_batch_stats=_spread(p_batch),
                spread_eval=_spread(p_eval),
                eval_max_diff=(p_eval - p_one).abs().max().item(),
            )
        )
    return rows
