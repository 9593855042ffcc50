"""One rank of a distributed test run, started by ``ranks.by_hand`` (torchrun's variables set).

    python -m tests.training.ddp_worker ema OUT_DIR                # train; save what this rank saw and holds
    python -m tests.training.ddp_worker precise ARTIFACT OUT_DIR   # recompute precise statistics

``ema`` trains the ``mlp`` case of test_running_stats_ema.py under DDP with every BN layer's training-mode
inputs captured, and saves ``rank<R>.npz``: per layer the numpy EMA over this rank's batches
(``<layer>.ema_mean``, ``<layer>.ema_var``), how many batches it saw, and the buffers this rank ends with
(``<layer>.running_mean`` ...); rank 0 also exports the artifact to ``OUT_DIR/artifact``.
``precise`` loads ARTIFACT, recomputes its BN statistics over the training split on every rank and saves
the buffers each rank ends with in ``rank<R>.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from models import batchnorm_layers, load_artifact
from tests.training.test_running_stats_ema import CASES, capture_bn_inputs, numpy_ema
from training import TrainConfig, build_model, export_artifact, fit, load_data, split_dataset
from training.distributed import session
from training.precise_bn import recompute_bn_statistics


def bn_buffers(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {
        f"{name}.{buf}": getattr(bn, buf).detach().cpu().numpy().copy()
        for name, bn in batchnorm_layers(model)
        for buf in ("running_mean", "running_var", "num_batches_tracked")
    }


def train_and_record(out_dir: Path) -> None:
    options = dict(CASES["mlp"])
    rows = options.pop("rows")
    cfg = TrainConfig(out_dir=str(out_dir / "artifact"), progress=False, device="cpu", **options)
    with session(torch.device("cpu")) as ranks:
        train_ds, val_ds = split_dataset(load_data(cfg), val_fraction=cfg.val_fraction, seed=cfg.seed)
        train_ds = train_ds.subset(np.arange(rows))
        model, layers = build_model(cfg, train_ds)
        seen = capture_bn_inputs(model)
        metrics = fit(model, train_ds, val_ds, cfg, device="cpu", ranks=ranks)
        record: dict[str, np.ndarray] = bn_buffers(model)
        for name, batches in seen.items():
            record[f"{name}.ema_mean"], record[f"{name}.ema_var"] = numpy_ema(batches, cfg.bn_momentum)
            record[f"{name}.batches"] = np.array(len(batches))
            record[f"{name}.rows"] = np.array(sum(len(b) for b in batches))
        np.savez(out_dir / f"rank{ranks.rank}.npz", **record)
        if ranks.is_main:
            export_artifact(cfg, model, layers, train_ds, val_ds, metrics, device="cpu")


def recompute_and_record(artifact_dir: Path, out_dir: Path) -> None:
    artifact = load_artifact(artifact_dir)
    t = artifact.manifest.training
    cfg = TrainConfig(dataset=t["dataset"])
    train_ds, _ = split_dataset(load_data(cfg), val_fraction=t["val_fraction"], seed=t["seed"])
    with session(torch.device("cpu")) as ranks:
        recompute_bn_statistics(artifact.model, train_ds.features, device=torch.device("cpu"), ranks=ranks)
        np.savez(out_dir / f"rank{ranks.rank}.npz", **bn_buffers(artifact.model))


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "ema":
        train_and_record(Path(sys.argv[2]))
    else:
        recompute_and_record(Path(sys.argv[2]), Path(sys.argv[3]))
