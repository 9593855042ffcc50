"""One experiment from options to numbers and files: the scaling grid, then the inference hand-over.

result = run_experiment(ExperimentConfig.quick(), out_dir=Path("experiment"))
result.summaries        # one VariantSummary per variant, at its best learning rate
result.handover         # one HandoverRow per batch size
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig
from training.data import Dataset, load_builtin, split_dataset
from training.engine import fit
from training.experiment import plots
from training.experiment.handover import BATCH_SIZES, HandoverRow, handover, single_row_error
from training.experiment.scaling import Grid, Run, best_lr, best_runs, run_grid
from training.experiment.table import VariantSummary, handover_table, lr_table, scaling_table, summaries
from training.experiment.variants import (
    LARGEST,
    SMALLEST,
    VARIANTS,
    Variant,
    build_variant,
    feature_ratio,
    rescaled,
)

HANDOVER_VARIANT = "standardize_bn"  # the network bnserve would export and serve


@dataclass
class ExperimentConfig:
    dataset: str = "breast_cancer"  # a built-in classification dataset (DATASETS)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    epochs: int = 40
    hidden: tuple[int, ...] = (64, 64)
    batch_size: int = 32
    target: float = 0.95  # validation accuracy to reach
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    handover_rows: int = 512  # rows predicted both ways; a multiple of every batch size up to 256

    @classmethod
    def quick(cls) -> ExperimentConfig:
        """A run of a few seconds for tests: two seeds, two learning rates, ten epochs."""
        return cls(seeds=(0, 1), lrs=(1e-3, 1e-2), epochs=10, hidden=(32, 32))

    def train_config(self) -> TrainConfig:
        # dropout 0: the variants differ in scaling and BN only; weight decay stays the project's default.
        return TrainConfig(
            dataset=self.dataset,
            model="mlp",
            epochs=self.epochs,
            hidden=self.hidden,
            batch_size=self.batch_size,
            dropout=0.0,
            device="cpu",
            progress=False,
        )


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    grid: Grid
    summaries: list[VariantSummary]
    handover: list[HandoverRow]
    single_row_error: str | None  # what PyTorch said to one row in training mode
    seconds: float
    files: dict[str, bytes] = field(default_factory=dict)

    def tables(self) -> str:
        c = self.config
        return "\n\n".join(
            [
                f"Scaling: {c.dataset} rescaled to mean |x| from {SMALLEST:g} to {LARGEST:g}, "
                f"{len(c.seeds)} seeds, {c.epochs} epochs, each variant at its best lr",
                scaling_table(self.summaries, c.target),
                "Final validation accuracy (mean over seeds) per learning rate:",
                lr_table(self.grid),
                f"Hand-over: {c.handover_rows} rows, {HANDOVER_VARIANT} network, batch statistics vs frozen EMA",
                handover_table(self.handover),
                f"PyTorch, one row in training mode: {self.single_row_error}",
            ]
        )

    def to_json(self) -> dict[str, object]:
        return {
            "config": asdict(self.config),
            "seconds": self.seconds,
            "summaries": [asdict(s) for s in self.summaries],
            "handover": [asdict(r) for r in self.handover],
            "single_row_error": self.single_row_error,
            "runs": [asdict(r) for by_lr in self.grid.values() for runs in by_lr.values() for r in runs],
        }


def run_experiment(
    cfg: ExperimentConfig, *, out_dir: Path | None = None, log: Callable[[str], None] = print
) -> ExperimentResult:
    """Gives back the experiment's numbers; with ``out_dir``, also writes its PNGs, tables and results.json."""
    started = time.perf_counter()
    dataset = rescaled(load_builtin(cfg.dataset))
    train, val = split_dataset(dataset, val_fraction=0.2, seed=0)
    variants = tuple(v for v in VARIANTS if v.name in cfg.variants)
    base = cfg.train_config()

    def progress(variant: Variant, lr: float, runs: list[Run]) -> None:
        finals = np.mean([r.final_accuracy for r in runs])
        log(f"  {variant.name:<15} lr {lr:<7g} final val accuracy {finals:.3f}")

    log(
        f"{len(variants)} variants x {len(cfg.lrs)} learning rates x {len(cfg.seeds)} seeds, {cfg.epochs} epochs"
    )
    grid = run_grid(train, val, base, lrs=cfg.lrs, seeds=cfg.seeds, variants=variants, on_run=progress)
    best = best_runs(grid, cfg.target)
    rows, error = _handover(cfg, grid, dataset, train, val)
    result = ExperimentResult(
        cfg, grid, summaries(grid, cfg.target), rows, error, time.perf_counter() - started
    )
    result.files = {
        "curves.png": plots.curves_png(best, cfg.target),
        "gradient_ratio.png": plots.gradient_png(best, feature_ratio(dataset)),
        "lr_grid.png": plots.lr_grid_png(grid),
        "handover.png": plots.handover_png(rows),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in result.files.items():
            (out_dir / name).write_bytes(data)
        (out_dir / "tables.md").write_text(result.tables() + "\n")
        (out_dir / "results.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")
    return result


def _handover(
    cfg: ExperimentConfig, grid: Grid, dataset: Dataset, train: Dataset, val: Dataset
) -> tuple[list[HandoverRow], str | None]:
    """Trains the served variant once (first seed, its best lr) and predicts the same rows both ways:
    ``cfg.handover_rows`` rows drawn from the whole dataset."""
    variant = next(v for v in VARIANTS if v.name == HANDOVER_VARIANT)
    lr = best_lr(grid[variant.name], cfg.target) if variant.name in grid else cfg.lrs[0]
    train_cfg = replace(cfg.train_config(), lr=lr, seed=cfg.seeds[0])
    model = build_variant(variant, train_cfg, train)
    fit(model, train, val, train_cfg, device="cpu")
    sizes = tuple(b for b in BATCH_SIZES if b <= len(dataset))  # a small dataset stops short of 256
    n = min(cfg.handover_rows, len(dataset)) // sizes[-1] * sizes[-1]
    order = np.random.default_rng(0).permutation(len(dataset))[:n]
    x, y = torch.from_numpy(dataset.features[order]), torch.from_numpy(dataset.target[order])
    return handover(model, x, y, batch_sizes=sizes), single_row_error(model, x)
