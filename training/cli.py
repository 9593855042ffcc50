"""Command line: ``python -m training --dataset breast_cancer --out artifacts/breast_cancer``.

Every flag maps onto a ``TrainConfig`` field (``--bn-momentum`` -> ``bn_momentum``). Bad options and bad
data print one message to stderr and exit with status 2; a diverged run exits with status 1. Neither
writes anything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from models import load_artifact
from models.manifest import Manifest
from models.mlp import ACTIVATIONS
from training import distributed
from training.config import BN_POSITIONS, BN_STATS, DATASETS, DEVICES, MODELS, TASKS, TrainConfig
from training.errors import ConfigError, DataError, TrainingError
from training.pipeline import train
from training.tabular import MAX_AUTO_CLASSES

_DEFAULTS = TrainConfig()
N = TypeVar("N", int, float)


def comma_separated(convert: Callable[[str], N], what: str, example: str) -> Callable[[str], tuple[N, ...]]:
    """Gives back an argparse ``type`` that reads positive ``what`` (say "integers") written like ``example``."""

    def parse(text: str) -> tuple[N, ...]:
        try:
            values = tuple(convert(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what} like {example}, got {text!r}"
            ) from None
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"expected positive {what} like {example}, got {text!r}")
        return values

    return parse


_int_tuple = comma_separated(int, "integers", "256,256")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except the unhelpful ``None`` and ``False`` (those flags say what they default to)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == ():
            return action.help
        return super()._get_help_string(action)


def get_args_parser() -> argparse.ArgumentParser:
    d = _DEFAULTS
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a batch-normalized network and export it as a bnserve artifact.",
        epilog="examples:\n"
        "  python -m training --dataset wine --out artifacts/wine\n"
        "  python -m training --csv houses.csv --target price --hidden 64,64\n\n"
        "CSV rows in error messages count data rows from 1, the header not counted.",
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", default=d.dataset, choices=DATASETS, help="built-in scikit-learn dataset"
    )
    source.add_argument(
        "--csv", metavar="PATH", help="your own .csv or .parquet file with a header row (needs --target)"
    )
    data.add_argument("--target", metavar="COLUMN", help="the column to predict")
    data.add_argument(
        "--task",
        default=d.task,
        choices=TASKS,
        help="auto: for a CSV, classification when any target value is non-numeric or all are integers "
        f"with at most {MAX_AUTO_CLASSES} distinct values, regression otherwise",
    )
    _add_table_flags(parser)
    data.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of rows held out")
    data.add_argument(
        "--seed", type=int, default=d.seed, help="seeds the split, initialization and shuffling"
    )

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=d.model, choices=MODELS, help="auto: cnn for digits, mlp otherwise")
    model.add_argument("--hidden", type=_int_tuple, default=d.hidden, metavar="W,W", help="MLP hidden widths")
    model.add_argument("--channels", type=_int_tuple, default=d.channels, metavar="C,C", help="CNN channels")
    model.add_argument("--activation", default=d.activation, choices=list(ACTIVATIONS))
    model.add_argument("--dropout", type=float, default=d.dropout)
    model.add_argument("--bn-position", default=d.bn_position, choices=BN_POSITIONS)
    model.add_argument(
        "--bn-momentum",
        type=float,
        default=d.bn_momentum,
        help="PyTorch convention: running = (1 - m) * running + m * batch. Keras' momentum k weighs the old "
        "value instead, so m = 1 - k: Keras 0.99 == PyTorch 0.01",
    )
    model.add_argument("--bn-eps", type=float, default=d.bn_eps, help="added to the variance before the sqrt")
    model.add_argument(
        "--bn-stats",
        default=d.bn_stats,
        choices=BN_STATS,
        help="what the exported BN buffers hold: ema, PyTorch's running average of the training batches; "
        "precise, each layer's population mean and variance over the whole training split, recomputed after "
        "training with the weights fixed (summed over every rank)",
    )
    model.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on CUDA: SyncBatchNorm, so each step normalizes by the whole global batch "
        "instead of each rank's share (refused on the CPU)",
    )

    optim = parser.add_argument_group("optimization (AdamW)")
    optim.add_argument("--epochs", type=int, default=d.epochs)
    optim.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="rows per optimizer step, all ranks together under torchrun; a last batch of one row "
        "(fewer than 2 per rank) is merged",
    )
    optim.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    optim.add_argument("--weight-decay", type=float, default=d.weight_decay)
    optim.add_argument(
        "--device", default=d.device, choices=DEVICES, help="auto: CUDA when available, else CPU"
    )
    optim.add_argument(
        "--threads", type=int, default=d.threads, help="PyTorch CPU threads; 0: PyTorch's default (all cores)"
    )
    optim.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    export = parser.add_argument_group("export")
    export.add_argument(
        "--out", metavar="DIR", help="artifact directory (default: artifacts/<dataset or CSV stem>)"
    )
    export.add_argument(
        "--repository",
        metavar="DIR",
        help="write the next version of model --name into this model repository (DIR/NAME/N) instead of --out",
    )
    export.add_argument("--name", help="artifact name (default: the dataset name or CSV stem)")
    export.add_argument(
        "--num-canaries",
        type=int,
        default=d.num_canaries,
        help="validation rows stored to verify the artifact",
    )
    export.add_argument(
        "--report",
        action="store_true",
        help="also write report.html with PNGs (curves, BN statistics, input standardization) into the artifact",
    )
    return parser


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _add_table_flags(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    table = parser.add_argument_group("your own table (types are inferred; these override them)")
    for flag, what in (
        ("--categorical", "columns read as categories, even when they look numeric"),
        ("--numeric", "columns that must be numbers"),
        ("--drop", "columns left out (ids, leakage)"),
    ):
        table.add_argument(flag, type=_names, default=(), metavar="COL,COL", help=what)
    table.add_argument(
        "--missing-tokens",
        type=lambda text: tuple(t.strip() for t in text.split(",")),
        default=d.missing_tokens,
        metavar="TOK,TOK",
        help="cells that mean missing, compared after stripping spaces (an empty item: the empty cell)",
    )
    table.add_argument(
        "--min-frequency",
        type=int,
        default=d.min_frequency,
        help="training rows a category needs for its own input; rarer ones are pooled into <other>",
    )
    table.add_argument(
        "--max-categories",
        type=int,
        default=d.max_categories,
        help="most frequent categories kept per column",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Gives back the ``TrainConfig`` the parsed flags describe."""
    options = vars(args).copy()
    options["out_dir"] = options.pop("out")
    options["progress"] = not options.pop("no_progress")
    return TrainConfig(**options)


def main(argv: Sequence[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        out_dir = train(config_from_args(args))
    except TrainingError as e:
        # Under torchrun rank 0 reports every rank's failure; the other ranks exit quietly.
        message = f"{parser.prog}: error: {e}\n" if distributed.reports(e) else None
        parser.exit(2 if isinstance(e, ConfigError | DataError) else 1, message)
    if distributed.launch_rank() == 0:  # under torchrun only rank 0 prints
        print_summary(out_dir, time.perf_counter() - started)


def print_summary(out_dir: Path, seconds: float) -> None:
    """Prints the train and validation metrics recorded in the artifact at ``out_dir``."""
    manifest = load_artifact(out_dir).manifest  # also proves the artifact loads
    m, t = manifest.metrics, manifest.training
    if manifest.task == "classification":
        rows = [("accuracy", "train_accuracy", "val_accuracy"), ("loss", "train_loss", "val_loss")]
    else:
        rows = [
            ("rmse", "train_rmse", "val_rmse"),
            ("r2", "train_r2", "val_r2"),
            ("loss", "train_loss", "val_loss"),
        ]
    print(
        f"{manifest.name}: {t['model']} on {t['device']}, {t['train_rows']} train / {t['val_rows']} val rows"
    )
    print(f"{'':>10} {'train':>10} {'val':>10}")
    for label, train_key, val_key in rows:
        print(f"{label:>10} {m[train_key]:>10.4f} {m[val_key]:>10.4f}")
    print(bn_statistics_line(manifest))
    print(f"trained in {m['train_seconds']:.1f} s ({seconds:.1f} s in all) -> {out_dir}")
    if t.get("report"):
        from training.report import REPORT_FILE  # matplotlib: only when there is a report

        print(f"report: {out_dir / REPORT_FILE}")


def bn_statistics_line(manifest: Manifest) -> str:
    """Gives back the summary line that says which statistics the BN buffers hold, and the EMA's gap."""
    s = manifest.bn_statistics
    ranks = f"{s.world_size} rank{'s' if s.world_size > 1 else ''}"
    if s.kind == "ema" or s.ema_gap is None:
        return f"BN statistics: ema (running average of the training batches; {ranks})"
    gaps = ", ".join(
        f"{g.layer} {g.max_abs_mean_shift:.3f}σ / {g.max_abs_log_var_ratio:.3f}" for g in s.ema_gap
    )
    return (
        f"BN statistics: precise (population over the training split; {ranks}); "
        f"EMA gap, max |Δmean|/σ / max |log var ratio|: {gaps}"
    )
