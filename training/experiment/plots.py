"""The experiment's PNGs: curves per variant, the gradient ratio, the learning-rate grid, the hand-over."""

from __future__ import annotations

import numpy as np

from training.experiment.handover import HandoverRow
from training.experiment.scaling import Grid, Run
from training.experiment.variants import VARIANTS
from training.plots import band, figure, png_bytes

LABELS = {v.name: v.label for v in VARIANTS}
COLORS = {
    "raw": "#d62728",
    "standardize": "#ff7f0e",
    "bn_before": "#1f77b4",
    "bn_after": "#9467bd",
    "standardize_bn": "#2ca02c",
}


def _per_epoch(runs: list[Run], attr: str) -> np.ndarray:
    """Gives back (R, T) with NaN past the end of a run that stopped early (diverged)."""
    width = max(len(getattr(r, attr)) for r in runs)
    out = np.full((len(runs), width), np.nan)
    for i, r in enumerate(runs):
        values = getattr(r, attr)
        out[i, : len(values)] = values
    return out


def curves_png(best: dict[str, list[Run]], target: float) -> bytes:
    """Training loss and validation accuracy per epoch, each variant at its best learning rate."""
    fig, (loss_ax, acc_ax) = figure(ncols=2)
    for name, runs in best.items():
        for ax, attr in ((loss_ax, "train_loss"), (acc_ax, "val_accuracy")):
            values = _per_epoch(runs, attr)
            epochs = np.arange(1, values.shape[1] + 1)
            band(ax, epochs, values, label=f"{LABELS[name]} (lr {runs[0].lr:g})", color=COLORS.get(name))
    loss_ax.set(yscale="log", xlabel="epoch", ylabel="training loss (running, train mode)")
    acc_ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy (eval mode)", ylim=(0.5, 1.0))
    acc_ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"mean over {len(next(iter(best.values())))} seeds, shaded: min to max", fontsize=9)
    return png_bytes(fig)


def gradient_png(best: dict[str, list[Run]], feature_ratio: float) -> bytes:
    """Per epoch, mean |dL/dW| of the first layer's large-scale columns over its small-scale ones;
    ``feature_ratio`` (the features' own mean |x| ratio) is drawn for comparison."""
    fig, (ax,) = figure(width=6.4)
    ax.axhline(
        feature_ratio, color="black", linestyle=":", linewidth=1, label="mean |x| ratio of those features"
    )
    for name, runs in best.items():
        values = _per_epoch(runs, "grad_ratio")
        band(
            ax,
            np.arange(1, values.shape[1] + 1),
            values,
            label=LABELS[name],
            color=COLORS.get(name),
            geometric=True,
        )
    ax.axhline(1, color="grey", linestyle="--", linewidth=1)
    ax.set(yscale="log", xlabel="epoch", ylabel="|dL/dW|, large / small features")
    ax.set_title("first Linear layer: gradient on large-scale over small-scale inputs", fontsize=9)
    ax.legend(fontsize=8, loc="center right")
    return png_bytes(fig)


def lr_grid_png(grid: Grid) -> bytes:
    """Final validation accuracy against the learning rate, mean and min-max over seeds."""
    fig, (ax,) = figure(width=6.4)
    for name, by_lr in grid.items():
        lrs = sorted(by_lr)
        finals = np.array([[r.final_accuracy for r in by_lr[lr]] for lr in lrs]).T  # (seeds, lrs)
        band(ax, lrs, finals, label=LABELS[name], color=COLORS.get(name))
        ax.scatter(lrs, finals.mean(axis=0), color=COLORS.get(name), s=12)
    ax.set(xscale="log", xlabel="learning rate (AdamW)", ylabel="final validation accuracy", ylim=(0.5, 1.0))
    ax.legend(fontsize=8, loc="lower left")
    return png_bytes(fig)


def handover_png(rows: list[HandoverRow]) -> bytes:
    """Batch statistics against the frozen EMA, for the same rows cut into batches of 1 to 256."""
    fig, (gap_ax, acc_ax) = figure(ncols=2)
    sizes = [r.batch_size for r in rows]
    gap_ax.plot(sizes, [r.tv_distance for r in rows], "o-", label="batch stats vs EMA (TV distance)")
    gap_ax.plot(sizes, [1 - r.label_agreement for r in rows], "s-", label="share of labels that differ")
    gap_ax.plot(sizes, [r.eval_max_diff for r in rows], "^-", label="eval: max diff vs one row at a time")
    gap_ax.set(xscale="log", xlabel="rows per batch", ylabel="difference", ylim=(-0.02, 1.0))
    gap_ax.set_xticks(sizes, [str(s) for s in sizes])
    gap_ax.legend(fontsize=8)
    acc_ax.plot(
        sizes,
        [r.accuracy_batch_stats for r in rows],
        "o-",
        color="#d62728",
        label="training-mode BN (batch stats)",
    )
    acc_ax.plot(sizes, [r.accuracy_eval for r in rows], "o-", color="#2ca02c", label="eval mode (frozen EMA)")
    acc_ax.set(xscale="log", xlabel="rows per batch", ylabel="accuracy on the same rows", ylim=(0.0, 1.02))
    acc_ax.set_xticks(sizes, [str(s) for s in sizes])
    acc_ax.legend(fontsize=8, loc="lower right")
    return png_bytes(fig)
