"""Data -> model -> artifact: the steps ``train(cfg)`` runs, each usable on its own.

dataset = load_data(cfg)
train_ds, val_ds = split_dataset(dataset, val_fraction=cfg.val_fraction, seed=cfg.seed)
model, layers = build_model(cfg, train_ds)        # standardization already set from train_ds
recorder = HistoryRecorder(task=train_ds.task, steps_per_epoch=steps_per_epoch(len(train_ds), cfg.batch_size))
metrics = fit(model, train_ds, val_ds, cfg, device="cpu", on_epoch=recorder)
export_artifact(cfg, model, layers, train_ds, val_ds, metrics, device="cpu", history=recorder.history())
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from models import CNNConfig, LayerSpec, MLPConfig, build_network, cnn_layers, mlp_layers, save_artifact
from models.history import HISTORY_FILE, TrainingHistory
from models.layers import Rescale, Standardize
from models.manifest import BNStatistics
from models.repository import publish_version
from training import distributed
from training.config import TrainConfig
from training.data import DATAFRAME_NAME, Dataset, load_data, split_dataset
from training.distributed import Ranks
from training.engine import fit, resolve_device, steps_per_epoch
from training.errors import ConfigError
from training.history import HistoryRecorder
from training.precise_bn import finish_bn_statistics

if TYPE_CHECKING:
    import pandas as pd


def train(cfg: TrainConfig, data: pd.DataFrame | None = None) -> Path:
    """Gives back the directory of the artifact trained as ``cfg`` says, on the DataFrame ``data`` when
    given (``cfg.target`` names its target column).

    Raises ``DataError`` or ``ConfigError`` before training starts, and ``TrainingDivergedError`` when
    training produces NaN/inf; in every failure nothing is written. Launched by torchrun, every rank trains
    its share (docs/DISTRIBUTED.md), rank 0 writes the artifact once every rank has finished, and every rank
    gives back its path; a failure on any rank raises on all of them.
    """
    device = resolve_device(cfg.device)
    distributed.check_sync_bn(cfg.sync_bn, device)
    with distributed.session(device) as ranks:
        device = ranks.device(device)
        train_ds, val_ds, model, layers = ranks.together(lambda: prepare(cfg, ranks, data))
        ranks.together(lambda: distributed.check_same_data(train_ds.features, train_ds.target, ranks))
        if ranks.rank:  # own dropout masks; DDP gives every rank rank 0's weights
            torch.manual_seed(cfg.seed + ranks.rank)
        synced = distributed.convert_sync_batchnorm(model) if cfg.sync_bn else {}
        distributed.install_test_fault(model, ranks)
        steps = steps_per_epoch(len(train_ds), cfg.batch_size, min_rows=2 * ranks.world_size)
        recorder = HistoryRecorder(task=train_ds.task, steps_per_epoch=steps)
        metrics = fit(model, train_ds, val_ds, cfg, device=device, ranks=ranks, on_epoch=recorder)
        distributed.revert_sync_batchnorm(model, synced)
        bn_statistics = finish_bn_statistics(
            cfg, model, train_ds, val_ds, metrics, device=device, ranks=ranks
        )
        ranks.agree(None)  # every rank finished: only now is the artifact written
        # with a repository, the other ranks give back the model's directory
        out_dir = artifact_dir(cfg, DATAFRAME_NAME if data is not None else None)
        if ranks.is_main:
            out_dir = export_artifact(
                *(cfg, model, layers, train_ds, val_ds, metrics),
                device=device,
                bn_statistics=bn_statistics,
                history=recorder.history(),
            )
        ranks.agree(None)  # rank 0 wrote it: the others may now exit 0
        return out_dir


def prepare(
    cfg: TrainConfig, ranks: Ranks, data: pd.DataFrame | None = None
) -> tuple[Dataset, Dataset, nn.Sequential, list[LayerSpec]]:
    """Gives back the train and validation splits and the fresh model: the same on every rank."""
    distributed.check_batch_size(cfg.batch_size, ranks)
    train_ds, val_ds = split_dataset(load_data(cfg, data), val_fraction=cfg.val_fraction, seed=cfg.seed)
    model, layers = build_model(cfg, train_ds)
    return train_ds, val_ds, model, layers


def model_kind(cfg: TrainConfig, data: Dataset) -> str:
    """Gives back ``"cnn"`` or ``"mlp"``: ``auto`` picks the CNN for image data."""
    if cfg.model == "auto":
        return "cnn" if data.is_image and data.task == "classification" else "mlp"
    if cfg.model == "cnn" and not data.is_image:
        raise ConfigError(
            f"model 'cnn' needs image data (digits); {data.name} rows are {data.features.shape[1]} flat features, "
            "use model 'mlp'"
        )
    if cfg.model == "cnn" and data.task != "classification":
        raise ConfigError("model 'cnn' is a classifier; use model 'mlp' for regression")
    return cfg.model


def build_model(cfg: TrainConfig, train: Dataset) -> tuple[nn.Sequential, list[LayerSpec]]:
    """Gives back a freshly initialized network (seeded by ``cfg.seed``) and its layer specs, with the
    input standardization, and for regression the output rescaling, computed from ``train``."""
    if model_kind(cfg, train) == "cnn":
        c, h, w = train.input_shape
        layers = cnn_layers(
            CNNConfig(
                num_classes=train.num_outputs,
                image_shape=(c, h, w),
                channels=cfg.channels,
                activation=cfg.activation,
                dropout=cfg.dropout,
                bn_position=cfg.bn_position,
                bn_momentum=cfg.bn_momentum,
                bn_eps=cfg.bn_eps,
            )
        )
    else:
        layers = mlp_layers(
            MLPConfig(
                num_features=train.features.shape[1],
                num_outputs=train.num_outputs,
                hidden=cfg.hidden,
                activation=cfg.activation,
                dropout=cfg.dropout,
                bn_position=cfg.bn_position,
                bn_momentum=cfg.bn_momentum,
                bn_eps=cfg.bn_eps,
                rescale_output=train.task == "regression",
            )
        )
    torch.manual_seed(cfg.seed)
    model = build_network(layers)
    set_standardization(model, train)
    return model, layers


@torch.no_grad()
def set_standardization(model: nn.Sequential, train: Dataset) -> None:
    """Writes the training split's per-feature mean and std into ``input_norm``, and for regression the
    target's std and mean into ``output_scale``, so the network takes and gives real units."""
    x = train.features.astype(np.float64)  # (N, F)
    mean, std = x.mean(axis=0), x.std(axis=0)
    # A constant feature (digits has blank border pixels) has no spread to divide by: leave it unscaled.
    std[x.max(axis=0) == x.min(axis=0)] = 1.0
    input_norm = model.get_submodule("input_norm")
    assert isinstance(input_norm, Standardize)
    input_norm.mean.copy_(torch.from_numpy(mean))
    input_norm.std.copy_(torch.from_numpy(std))
    if train.task == "regression":
        output_scale = model.get_submodule("output_scale")
        assert isinstance(output_scale, Rescale)
        y = train.target.astype(np.float64)
        output_scale.scale.fill_(float(y.std()) if y.max() > y.min() else 1.0)
        output_scale.shift.fill_(float(y.mean()))


def export_artifact(
    cfg: TrainConfig,
    model: nn.Sequential,
    layers: list[LayerSpec],
    train: Dataset,
    val: Dataset,
    metrics: dict[str, float],
    *,
    device: str | torch.device,
    bn_statistics: BNStatistics | None = None,
    history: TrainingHistory | None = None,
) -> Path:
    """Gives back the artifact directory (``cfg.out_dir``, default ``artifacts/<name>``, or with
    ``cfg.repository`` the next version ``<repository>/<name>/<N>``), written atomically.

    ``history`` goes in as ``history.json``, and with ``cfg.report`` the report and its PNGs too.
    """
    source = train.name if train.table is not None else cfg.source_name  # a DataFrame: "dataframe"
    out_dir = artifact_dir(cfg, source)
    name = cfg.name or source
    record = training_record(cfg, train, val, device=device, out_dir=out_dir, name=name)
    files = {} if history is None else {HISTORY_FILE: history.to_json()}
    if cfg.report and history is not None:
        # Imported here: matplotlib takes ~0.4 s to import and only a run with a report needs it.
        from training.report import render_report

        files |= render_report(
            model,
            history,
            name=name,
            feature_names=train.input_columns,
            class_labels=train.class_labels,
            metrics=metrics,
            training=record,
        )
    save = functools.partial(
        save_artifact,
        model=model,
        layers=layers,
        name=name,
        task=train.task,
        feature_names=train.feature_names,
        class_labels=train.class_labels,
        canary_inputs=val.raw_rows(cfg.num_canaries),  # raw rows, as a client sends them
        preprocessing=train.preprocessing,
        input_shape=list(train.input_shape),
        target_name=train.target_name,
        training=record,
        metrics=metrics,
        bn_statistics=bn_statistics,
        files=files,
    )
    if cfg.repository is not None:
        return publish_version(cfg.repository, name, save)
    return save(out_dir)


def artifact_dir(cfg: TrainConfig, source: str | None = None) -> Path:
    """Gives back where the artifact goes: ``cfg.out_dir`` (default ``artifacts/<source>``, the dataset name
    or CSV stem), or with ``cfg.repository`` the model's directory there (the version number is taken when
    it is written)."""
    if cfg.repository is not None:
        return Path(cfg.repository) / (cfg.name or source or cfg.source_name)
    return Path(cfg.out_dir) if cfg.out_dir is not None else Path("artifacts") / (source or cfg.source_name)


def training_record(
    cfg: TrainConfig, train: Dataset, val: Dataset, *, device: str | torch.device, out_dir: Path, name: str
) -> dict[str, Any]:
    """Gives back the manifest's ``training`` dict: every option, with ``auto`` and defaults resolved."""
    return cfg.to_json() | {
        "dataset": None if train.table is not None else cfg.dataset,
        "task": train.task,
        "model": model_kind(cfg, train),
        "device": str(torch.device(device)),
        "out_dir": str(out_dir),
        "name": name,
        "train_rows": len(train),
        "val_rows": len(val),
        "optimizer": "AdamW",
        "loss": "cross_entropy" if train.task == "classification" else "mse_standardized_target",
    }
