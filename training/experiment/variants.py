"""The experiment's data and networks: a dataset rescaled to span 1e-2..1e3, and the five MLP variants.

data = rescaled(load_builtin("breast_cancer"))     # feature j's mean |x| is 10 ** (-2 + 5 j / (F - 1))
model = build_variant(VARIANTS[0], cfg, train)     # raw features, no BN
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from models.layers import BatchNormSpec, LayerSpec, LinearSpec, build_network
from models.mlp import BNPosition
from training.config import TrainConfig
from training.data import Dataset
from training.pipeline import build_model, set_standardization

SMALLEST, LARGEST = 1e-2, 1e3  # the mean |value| of the first and of the last feature after rescaling


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    standardize: bool  # input standardization with the training split's mean and std
    bn_position: BNPosition | None  # None: no BN layer at all


VARIANTS = (
    Variant("raw", "raw features, no BN", standardize=False, bn_position=None),
    Variant("standardize", "input standardization", standardize=True, bn_position=None),
    Variant("bn_before", "BN before activation", standardize=False, bn_position="before_activation"),
    Variant("bn_after", "BN after activation", standardize=False, bn_position="after_activation"),
    Variant("standardize_bn", "standardization + BN", standardize=True, bn_position="before_activation"),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)


def feature_scales(num_features: int) -> np.ndarray:
    """Gives back the target mean |value| of each feature: log-spaced from SMALLEST to LARGEST."""
    return np.logspace(math.log10(SMALLEST), math.log10(LARGEST), num_features)


def rescaled(dataset: Dataset) -> Dataset:
    """Gives back ``dataset`` with feature j multiplied by a constant so that its mean |value| over all
    rows is ``feature_scales(F)[j]``: the features keep their shape and order, only their units change."""
    x = dataset.features.astype(np.float64)  # (N, F)
    magnitude = np.abs(x).mean(axis=0)
    magnitude[magnitude == 0] = 1.0  # an all-zero column stays zero
    features = (x * (feature_scales(x.shape[1]) / magnitude)).astype(np.float32)
    return replace(dataset, features=features, name=f"{dataset.name}_rescaled")


def scale_groups(num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Gives back the column indices of the small-scale and of the large-scale features: the first and
    the last fifth (at least one each) in ``feature_scales`` order."""
    k = max(num_features // 5, 1)
    return np.arange(k), np.arange(num_features - k, num_features)


def feature_ratio(dataset: Dataset) -> float:
    """Gives back the mean |value| of the large-scale features over that of the small-scale ones."""
    small, large = scale_groups(dataset.features.shape[1])
    magnitude = np.abs(dataset.features.astype(np.float64)).mean(axis=0)
    return float(magnitude[large].mean() / magnitude[small].mean())


def without_batchnorm(layers: list[LayerSpec]) -> list[LayerSpec]:
    """Gives back ``layers`` without its BN layers; every Linear gets its bias back (BN had made it
    redundant)."""
    return [
        s.model_copy(update={"bias": True}) if isinstance(s, LinearSpec) else s
        for s in layers
        if not isinstance(s, BatchNormSpec)
    ]


def build_variant(variant: Variant, cfg: TrainConfig, train: Dataset) -> nn.Sequential:
    """Gives back the MLP of ``cfg`` built as ``variant`` says, initialized from ``cfg.seed``.

    Without standardization the ``input_norm`` layer stays the identity (mean 0, std 1), so the first
    Linear sees the raw rescaled features.
    """
    bn_position = variant.bn_position or "before_activation"
    _, layers = build_model(replace(cfg, bn_position=bn_position), train)  # the project's MLP, as trained
    if variant.bn_position is None:
        layers = without_batchnorm(layers)
    torch.manual_seed(cfg.seed)
    model = build_network(layers)
    if variant.standardize:
        set_standardization(model, train)
    return model
