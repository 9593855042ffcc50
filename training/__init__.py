"""Data -> model -> artifact: train a batch-normalized network and export it for serving.

    python -m training --dataset breast_cancer --out artifacts/breast_cancer
    python -m training --csv houses.csv --target price --hidden 64,64
    torchrun --nproc-per-node 2 -m training --dataset digits --bn-stats precise   # DDP, docs/DISTRIBUTED.md

    from training import TrainConfig, train
    out_dir = train(TrainConfig(dataset="wine", epochs=20))   # the artifact directory

Imports ``models``, never ``service``: the artifact is the only thing that crosses to serving.
"""

from __future__ import annotations

from training.config import TrainConfig
from training.data import Dataset, load_data, split_dataset
from training.engine import evaluate, fit, train_one_epoch
from training.errors import ConfigError, DataError, RankFailedError, TrainingDivergedError, TrainingError
from training.pipeline import build_model, export_artifact, train

__all__ = [
    "ConfigError",
    "DataError",
    "Dataset",
    "RankFailedError",
    "TrainConfig",
    "TrainingDivergedError",
    "TrainingError",
    "build_model",
    "evaluate",
    "export_artifact",
    "fit",
    "load_data",
    "split_dataset",
    "train",
    "train_one_epoch",
]
