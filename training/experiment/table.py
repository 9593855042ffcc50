"""The experiment's numbers as rows, and as the Markdown tables it prints and docs/EXPERIMENT.md shows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.experiment.handover import HandoverRow
from training.experiment.scaling import Grid, Run, best_lr
from training.experiment.variants import VARIANTS


@dataclass
class VariantSummary:
    variant: str
    label: str
    lr: float  # the best of the grid
    seeds: int
    reached: int  # seeds whose validation accuracy reached the target
    epochs_to_target: float | None  # median over the seeds that reached it
    steps_to_target: float | None
    final_accuracy_mean: float
    final_accuracy_std: float
    grad_ratio: float  # geometric mean over seeds of the whole-run ratio, large-scale / small-scale
    diverged: int


def summarize(variant: str, lr: float, runs: list[Run], target: float) -> VariantSummary:
    epochs = [e for r in runs if (e := r.epochs_to(target)) is not None]
    finals = [r.final_accuracy for r in runs]
    ratios = [r.grad_ratio_overall for r in runs if math.isfinite(r.grad_ratio_overall)]
    median = float(np.median(epochs)) if epochs else None
    return VariantSummary(
        variant=variant,
        label=next(v.label for v in VARIANTS if v.name == variant),
        lr=lr,
        seeds=len(runs),
        reached=len(epochs),
        epochs_to_target=median,
        steps_to_target=None if median is None else median * runs[0].steps_per_epoch,
        final_accuracy_mean=float(np.mean(finals)),
        final_accuracy_std=float(np.std(finals)),
        grad_ratio=float(np.exp(np.mean(np.log(ratios)))) if ratios else math.nan,
        diverged=sum(r.diverged is not None for r in runs),
    )


def summaries(grid: Grid, target: float) -> list[VariantSummary]:
    """Gives back one summary per variant, at the variant's best learning rate."""
    out = []
    for name, by_lr in grid.items():
        lr = best_lr(by_lr, target)
        out.append(summarize(name, lr, by_lr[lr], target))
    return out


def _number(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def scaling_table(rows: list[VariantSummary], target: float) -> str:
    lines = [
        f"| variant | best lr | reached {target:g} | epochs to {target:g} (median) | steps | "
        "final val accuracy | grad ratio large/small |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        diverged = f", {s.diverged} diverged" if s.diverged else ""
        lines.append(
            f"| {s.label} | {s.lr:g} | {s.reached}/{s.seeds}{diverged} | {_number(s.epochs_to_target, 'g')} | "
            f"{_number(s.steps_to_target, 'g')} | {s.final_accuracy_mean:.3f} ± {s.final_accuracy_std:.3f} | "
            f"{s.grad_ratio:.3g} |"
        )
    return "\n".join(lines)


def lr_table(grid: Grid) -> str:
    """Mean final validation accuracy of every variant at every learning rate of the grid."""
    lrs = sorted({lr for by_lr in grid.values() for lr in by_lr})
    lines = ["| variant | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---|" + "---|" * len(lrs)]
    for name, by_lr in grid.items():
        label = next(v.label for v in VARIANTS if v.name == name)
        cells = [
            f"{np.mean([r.final_accuracy for r in by_lr[lr]]):.3f}" if lr in by_lr else "—" for lr in lrs
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def handover_table(rows: list[HandoverRow]) -> str:
    lines = [
        "| batch size | batches | TV distance batch stats vs EMA | same label | accuracy, batch stats | "
        "accuracy, EMA (eval) | spread of answers, batch stats | eval: max diff vs one row at a time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.batch_size} | {r.batches} | {r.tv_distance:.4f} | {r.label_agreement:.3f} | "
            f"{r.accuracy_batch_stats:.3f} | {r.accuracy_eval:.3f} | {r.spread_batch_stats:.4f} | "
            f"{r.eval_max_diff:.1e} |"
        )
    return "\n".join(lines)
