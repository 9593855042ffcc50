"""Command line: ``python -m training.experiment [--quick] [--out DIR]``; prints the tables, writes the PNGs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from training.cli import comma_separated
from training.experiment.runner import ExperimentConfig, run_experiment
from training.experiment.variants import VARIANT_NAMES

_DEFAULTS = ExperimentConfig()
CLASSIFICATION_DATASETS = ("breast_cancer", "wine", "iris")


def _variants(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"variants must be among {list(VARIANT_NAMES)}, got {text!r}")
    return names


def get_args_parser() -> argparse.ArgumentParser:
    d = _DEFAULTS
    parser = argparse.ArgumentParser(
        prog="python -m training.experiment",
        description="Train one MLP five ways on features spanning 1e-2..1e3 (raw, input standardization, BN "
        "before or after the activation, both), each at its best learning rate of one grid, several seeds; "
        "then compare training-mode BN (batch statistics) with eval mode (frozen EMA) for batches of 1 to "
        "256 rows. Prints the tables and writes PNG plots, tables.md and results.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds: 2 seeds, 2 lrs, 10 epochs, 32,32"
    )
    parser.add_argument("--dataset", default=d.dataset, choices=CLASSIFICATION_DATASETS)
    parser.add_argument("--seeds", type=int, default=len(d.seeds), help="seeds 0..N-1 (init and batch order)")
    parser.add_argument(
        "--lrs",
        type=comma_separated(float, "numbers", "1e-3,1e-2"),
        default=d.lrs,
        metavar="LR,LR",
        help="the learning-rate grid",
    )
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument(
        "--hidden",
        type=comma_separated(int, "integers", "64,64"),
        default=d.hidden,
        metavar="W,W",
        help="MLP hidden widths",
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--target", type=float, default=d.target, help="validation accuracy to reach")
    parser.add_argument(
        "--variants",
        type=_variants,
        default=d.variants,
        metavar="NAME,NAME",
        help=f"among {', '.join(VARIANT_NAMES)}",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("experiment"), help="directory for the PNGs and results"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    if args.quick:
        return ExperimentConfig.quick()
    return ExperimentConfig(
        dataset=args.dataset,
        seeds=tuple(range(args.seeds)),
        lrs=args.lrs,
        epochs=args.epochs,
        hidden=args.hidden,
        batch_size=args.batch_size,
        target=args.target,
        variants=args.variants,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1 or args.batch_size < 2:
        parser.error("--seeds and --epochs must be at least 1, --batch-size at least 2")
    result = run_experiment(config_from_args(args), out_dir=args.out)
    print()
    print(result.tables())
    print(
        f"\n{result.seconds:.0f} s; wrote {', '.join(sorted(result.files))}, tables.md, results.json to {args.out}"
    )
