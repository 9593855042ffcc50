"""One dataclass holds every option of a training run; the CLI flags map onto its fields one to one.

cfg = TrainConfig(dataset="wine", epochs=20)
cfg = TrainConfig(csv="data/houses.csv", target="price", hidden=(64, 64))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from models.errors import RepositoryNameError
from models.mlp import ACTIVATIONS, BNPosition
from models.preprocessing import DEFAULT_MISSING_TOKENS
from models.repository import check_model_name
from training.errors import ConfigError

DATASETS = ("breast_cancer", "wine", "iris", "digits", "diabetes")  # scikit-learn ships these: no network
MODELS = ("auto", "mlp", "cnn")
DEVICES = ("auto", "cpu", "cuda")
TASKS = ("auto", "classification", "regression")
BN_POSITIONS = ("before_activation", "after_activation")
BN_STATS = ("ema", "precise")  # what the exported BN buffers hold: see docs/ARTIFACT.md, "Precise statistics"

Task = Literal["auto", "classification", "regression"]


@dataclass
class TrainConfig:
    # data
    dataset: str = "breast_cancer"  # one of DATASETS; ignored when csv is given
    csv: str | None = None  # the user's own CSV or Parquet file (header row, one column per feature)
    target: str | None = None  # the column to predict (of the file, or of the DataFrame given to train())
    task: Task = "auto"  # auto: built-in datasets know theirs; table targets follow the rule in tabular.py
    # tables (training/tabular.py): column types are inferred; these override them
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()  # ids, leakage
    missing_tokens: tuple[str, ...] = DEFAULT_MISSING_TOKENS  # cells that mean "missing", spaces stripped
    min_frequency: int = 5  # training rows a category needs for its own input; rarer ones are pooled
    max_categories: int = 50  # per column; the rest are pooled with the rare ones
    val_fraction: float = 0.2
    seed: int = 0  # split, initialization, shuffling
    # model
    model: str = "auto"  # auto: cnn for image data (digits), mlp otherwise
    hidden: tuple[int, ...] = (256, 256)  # MLP hidden widths, one Linear -> BN -> activation block each
    channels: tuple[int, ...] = (16, 32)  # CNN conv channels, one Conv -> BN -> activation block each
    activation: str = "relu"  # one of models.mlp.ACTIVATIONS
    dropout: float = 0.2  # diabetes overfits without it (val R² 0.24 -> 0.39); the classifiers do not mind
    bn_position: BNPosition = "before_activation"
    bn_momentum: float = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch; Keras k == 1 - m
    bn_eps: float = 1e-5
    bn_stats: str = "ema"  # ema: PyTorch's running average; precise: recomputed over the training split
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA only): each step normalizes by the global batch
    # optimization (AdamW)
    epochs: int = 20
    batch_size: int = 64  # rows per optimizer step; under torchrun the global batch, shared by the ranks
    lr: float = 1e-3
    weight_decay: float = 1e-4
    device: str = "auto"  # auto: CUDA when available, CPU otherwise
    # Networks this small gain nothing from intra-op threads, and on a busy machine the thread barriers
    # made a run 10-20x slower (measured on 2 shared cores); 0 keeps PyTorch's default (all cores).
    threads: int = 1
    # export
    out_dir: str | None = None  # default: artifacts/<dataset or CSV file stem>
    repository: str | None = None  # instead of out_dir: the next version of <repository>/<name>/
    name: str | None = None  # default: the dataset name or CSV file stem
    num_canaries: int = 4  # raw validation rows stored with their outputs to verify the artifact on load
    report: bool = False  # also store report.html and its PNGs (curves, BN statistics) in the artifact
    progress: bool = True  # show the tqdm progress bar

    def __post_init__(self) -> None:
        # Tuples may arrive as lists (from JSON or a caller); the manifest and equality want one form.
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channels = tuple(int(c) for c in self.channels)
        for names in ("categorical", "numeric", "drop", "missing_tokens"):
            setattr(self, names, tuple(str(v) for v in getattr(self, names)))
        for field, value, choices in (
            ("dataset", self.dataset, DATASETS),
            ("model", self.model, MODELS),
            ("device", self.device, DEVICES),
            ("task", self.task, TASKS),
            ("activation", self.activation, tuple(ACTIVATIONS)),
            ("bn_position", self.bn_position, BN_POSITIONS),
            ("bn_stats", self.bn_stats, BN_STATS),
        ):
            if value not in choices:
                raise ConfigError(f"{field} must be one of {list(choices)}, got {value!r}")
        _check(not self.hidden or min(self.hidden) > 0, "hidden widths must be positive", self.hidden)
        _check(bool(self.channels) and min(self.channels) > 0, "channels must be positive", self.channels)
        _check(0 <= self.dropout < 1, "dropout must be in [0, 1)", self.dropout)
        _check(
            0 < self.bn_momentum <= 1, "bn_momentum must be in (0, 1] (PyTorch convention)", self.bn_momentum
        )
        _check(self.bn_eps > 0, "bn_eps must be positive", self.bn_eps)
        _check(self.epochs >= 1, "epochs must be at least 1", self.epochs)
        # Training-mode BN needs at least 2 rows per batch to compute a variance.
        _check(
            self.batch_size >= 2, "batch_size must be at least 2 (BN needs 2 rows per batch)", self.batch_size
        )
        _check(math.isfinite(self.lr) and self.lr > 0, "lr must be a positive number", self.lr)
        _check(self.weight_decay >= 0, "weight_decay must be non-negative", self.weight_decay)
        _check(0 < self.val_fraction < 1, "val_fraction must be in (0, 1)", self.val_fraction)
        _check(self.threads >= 0, "threads must be non-negative (0: PyTorch's default)", self.threads)
        _check(self.num_canaries >= 1, "num_canaries must be at least 1", self.num_canaries)
        _check(self.min_frequency >= 1, "min_frequency must be at least 1", self.min_frequency)
        _check(self.max_categories >= 1, "max_categories must be at least 1", self.max_categories)
        if self.repository is not None:
            _check(self.out_dir is None, "give out_dir or repository, not both", self.out_dir)
            try:
                check_model_name(self.name or self.source_name)
            except RepositoryNameError as e:
                raise ConfigError(str(e)) from None

    @property
    def source_name(self) -> str:
        """The dataset name, or the CSV file's stem: the default artifact name and directory."""
        if self.csv is not None:
            return Path(self.csv).stem
        return self.dataset

    def to_json(self) -> dict[str, Any]:
        """Gives back every option as JSON-able values (tuples become lists), for the manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _check(ok: bool, what: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{what}, got {got!r}")
