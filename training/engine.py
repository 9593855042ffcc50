"""The training loop: AdamW over shuffled on-device mini-batches, validation and finiteness checks each epoch.

    metrics = fit(model, train, val, cfg, device="cpu")   # {"train_loss": ..., "val_accuracy": ..., ...}

The whole split is moved to the device once; a batch is an index into it, so the loop does no per-row
Python work. Regression loss is the MSE in standardized target units (the network's ``Rescale`` layer is
undone), so one learning rate suits every target scale; RMSE and R² are reported in real units.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models.device import DeviceError, pick_device
from models.layers import Rescale
from training.config import TrainConfig
from training.data import Dataset
from training.distributed import ALONE, Ranks
from training.errors import ConfigError, TrainingDivergedError

EVAL_CHUNK = 4096  # rows per forward pass in evaluate(): bounds memory on large CSVs, same result

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Called after each epoch's checks with (epoch, model, running train metrics, val metrics).
EpochHook = Callable[[int, nn.Module, dict[str, float], dict[str, float]], None]


@dataclass
class DeviceSplit:
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64 class index, or float32 target in real units
    task: str

    @classmethod
    def from_dataset(cls, ds: Dataset, device: torch.device) -> DeviceSplit:
        return cls(torch.from_numpy(ds.features).to(device), torch.from_numpy(ds.target).to(device), ds.task)


def resolve_device(name: str) -> torch.device:
    """Gives back the device ``name`` asks for (models.device.pick_device), as a ConfigError when absent."""
    try:
        return pick_device(name)
    except DeviceError as e:
        raise ConfigError(str(e)) from None


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Runs the block with ``n`` PyTorch CPU threads (0: leave as is), then restores the previous count."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device, *, min_rows: int = 2
) -> list[torch.Tensor]:
    """Gives back one epoch of shuffled row indices, one tensor per batch.

    A last batch of fewer than ``min_rows`` rows (one row alone; 2 per rank with several ranks) is merged
    into the one before: training-mode BN cannot take the variance of one row (BatchNorm1d raises), and
    dropping it would waste rows every epoch.
    """
    order = torch.randperm(n, generator=generator).to(device)  # drawn on the CPU: same order on any device
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_rows:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def steps_per_epoch(n: int, batch_size: int, *, min_rows: int = 2) -> int:
    steps = math.ceil(n / batch_size)
    return steps - 1 if steps > 1 and 0 < n % batch_size < min_rows else steps


def loss_function(model: nn.Module, task: str) -> LossFn:
    """Gives back the training loss: cross-entropy, or MSE in standardized target units."""
    if task == "classification":
        return F.cross_entropy
    rescale = next((m for m in model.modules() if isinstance(m, Rescale)), None)
    scale, shift = (rescale.scale[0], rescale.shift[0]) if rescale is not None else (1.0, 0.0)

    def standardized_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss((out[:, 0] - shift) / scale, (y - shift) / scale)

    return standardized_mse


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: DeviceSplit,
    batches: list[torch.Tensor],
    bar: tqdm,
    *,
    ranks: Ranks = ALONE,
) -> dict[str, float]:
    """Gives back the epoch's running loss (and accuracy), averaged over rows as seen in training mode.

    With several ranks, ``batches`` are the global batches: each rank trains on its share of every one,
    and the running metrics are summed over ranks.
    """
    model.train()
    sums = torch.zeros(2, device=data.x.device)  # loss · rows, correct rows
    for batch in batches:
        idx = ranks.local_rows(batch)
        x, y = data.x[idx], data.y[idx]  # (B, F), (B,)
        out = model(x)  # (B, num_outputs)
        loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        weight = ranks.loss_weight(len(idx), len(batch))
        (loss * weight if weight != 1 else loss).backward()
        optimizer.step()
        # Accumulated on the device: one host sync per epoch, not per batch.
        sums[0] += loss.detach() * len(idx)
        if data.task == "classification":
            sums[1] += (out.argmax(dim=1) == y).sum()
        bar.update()
    loss_sum, correct = ranks.sum(sums).tolist()
    n = sum(len(batch) for batch in batches)
    running = {"loss": loss_sum / n}
    if data.task == "classification":
        running["accuracy"] = correct / n
    return running


@torch.inference_mode()
def evaluate(model: nn.Module, loss_fn: LossFn, data: DeviceSplit) -> dict[str, float]:
    """Gives back the eval-mode loss and accuracy (classification) or RMSE and R² (regression)."""
    model.eval()
    out = torch.cat([model(x) for x in data.x.split(EVAL_CHUNK)])  # (N, num_outputs)
    metrics = {"loss": loss_fn(out, data.y).item()}
    if data.task == "classification":
        metrics["accuracy"] = (out.argmax(dim=1) == data.y).double().mean().item()
        return metrics
    err = out[:, 0].double() - data.y.double()
    ss_res = err.square().sum().item()
    ss_tot = (data.y.double() - data.y.double().mean()).square().sum().item()
    metrics["rmse"] = math.sqrt(ss_res / len(err))
    # A constant target has no variance to explain: scikit-learn's convention, 1 if perfect else 0.
    metrics["r2"] = 1 - ss_res / ss_tot if ss_tot > 0 else float(ss_res == 0)
    return metrics


def check_finite(model: nn.Module, epoch: int, losses: dict[str, float], cfg: TrainConfig) -> None:
    """Raises ``TrainingDivergedError`` when a loss, a parameter or a buffer (BN statistics) is NaN or inf."""
    problems = [f"{what} is {value}" for what, value in losses.items() if not math.isfinite(value)]
    tensors = [*model.named_buffers(), *model.named_parameters()]
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        problems.append(
            f"{len(bad)} tensor(s) hold NaN or inf: {', '.join(bad[:6])}{', ...' if len(bad) > 6 else ''}"
        )
    if problems:
        raise TrainingDivergedError(
            f"training diverged in epoch {epoch}: {'; '.join(problems)}. No artifact was written; "
            f"try a lower learning rate (lr was {cfg.lr:g}) or a larger bn_eps (was {cfg.bn_eps:g})"
        )


def fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    cfg: TrainConfig,
    *,
    device: str | torch.device,
    ranks: Ranks = ALONE,
    on_epoch: EpochHook | None = None,
) -> dict[str, float]:
    """Gives back the final metrics (``train_*`` and ``val_*``, eval mode) after training ``model`` in place.

    Batches are drawn from ``cfg.seed``; after every epoch the model is validated, checked for NaN/inf and
    handed to ``on_epoch`` (``training.history.HistoryRecorder`` records the curves that way).
    The model is left on ``device`` in eval mode. With several ``ranks`` it trains under DDP, every rank
    drawing the same global batches of ``cfg.batch_size`` rows; each epoch ends with rank 0's BN statistics
    on every rank.
    """
    device = torch.device(device)
    model.to(device)
    train_data, val_data = DeviceSplit.from_dataset(train, device), DeviceSplit.from_dataset(val, device)
    loss_fn = loss_function(model, train.task)
    net = ranks.wrap(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    started = time.perf_counter()
    min_rows = 2 * ranks.world_size
    total = cfg.epochs * steps_per_epoch(len(train), cfg.batch_size, min_rows=min_rows)
    show = cfg.progress and ranks.is_main
    bar = tqdm(total=total, desc=train.name, unit="step", disable=not show, dynamic_ncols=True)
    with bar, cpu_threads(cfg.threads if device.type == "cpu" else 0):
        for epoch in range(1, cfg.epochs + 1):
            batches = epoch_batches(len(train), cfg.batch_size, generator, device, min_rows=min_rows)
            running = train_one_epoch(net, optimizer, loss_fn, train_data, batches, bar, ranks=ranks)
            ranks.share_buffers(model)  # so every rank validates, and checks, the same network
            val_metrics = evaluate(model, loss_fn, val_data)
            check_finite(
                model, epoch, {"the training loss": running["loss"], "the val loss": val_metrics["loss"]}, cfg
            )
            if on_epoch is not None:
                on_epoch(epoch, model, running, val_metrics)
            bar.set_postfix(
                {k: f"{v:.4f}" for k, v in running.items()}
                | {f"val_{k}": f"{v:.4f}" for k, v in val_metrics.items()}
            )
        metrics = {f"train_{k}": v for k, v in evaluate(model, loss_fn, train_data).items()}
    metrics |= {f"val_{k}": v for k, v in val_metrics.items()}
    metrics["train_seconds"] = time.perf_counter() - started
    return metrics
