"""The monitored sites: the input features and every BN layer, each with its frozen statistics per channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from models import Artifact

INPUT = "input"  # the site name of the input features


@dataclass(frozen=True)
class Site:
    """One monitored place, the input features or one BN layer, with its frozen statistics per channel."""

    name: str
    kind: Literal["input", "1d", "2d"]
    channels: list[str]  # feature names for the input, channel indices for a BN layer
    ref_mean: np.ndarray  # (C,) running_mean, or the input standardization's mean
    ref_var: np.ndarray  # (C,) running_var, or std² (0 for a feature constant in training)
    eps: float  # the BN's eps; 0 for the input
    unit: np.ndarray  # (C,) one normalized unit in the layer's own units: sqrt(running_var + eps), or std
    offset: np.ndarray  # (C,) the slot output y maps to n = (y - offset) / scale: BN bias, or input mean
    scale: np.ndarray  # (C,) BN weight, or input std; 1 where ``silent``
    silent: np.ndarray  # (C,) bool: a BN weight of 0 leaves nothing of the input in the output

    @property
    def num_channels(self) -> int:
        return len(self.channels)


def input_site(artifact: Artifact) -> Site:
    """Gives back the input features as a site, against the manifest's input standardization."""
    std = artifact.manifest.input_standardization
    mean = np.asarray(std.mean, dtype=np.float64)
    sd = np.asarray(std.std, dtype=np.float64)
    constant = sd == 1.0  # the manifest's marker for a feature with zero variance in training
    return Site(
        name=INPUT,
        kind="input",
        channels=list(artifact.manifest.feature_names),
        ref_mean=mean,
        ref_var=np.where(constant, 0.0, sd * sd),
        eps=0.0,
        unit=sd,
        offset=mean,
        scale=sd,
        silent=np.zeros(len(sd), dtype=bool),
    )


def bn_site(name: str, bn: nn.modules.batchnorm._BatchNorm) -> Site:
    """Gives back one BN layer as a site; its buffers are copied, never written."""
    assert bn.running_mean is not None and bn.running_var is not None
    rm = bn.running_mean.detach().double().cpu().numpy().copy()
    rv = bn.running_var.detach().double().cpu().numpy().copy()
    c = len(rm)
    weight = bn.weight.detach().double().cpu().numpy().copy() if bn.affine else np.ones(c)
    bias = bn.bias.detach().double().cpu().numpy().copy() if bn.affine else np.zeros(c)
    silent = np.abs(weight) < 1e-12
    return Site(
        name=name,
        kind="2d" if isinstance(bn, nn.BatchNorm2d) else "1d",
        channels=[str(i) for i in range(c)],
        ref_mean=rm,
        ref_var=rv,
        eps=float(bn.eps),
        unit=np.sqrt(rv + bn.eps),
        offset=bias,
        scale=np.where(silent, 1.0, weight),
        silent=silent,
    )
