"""The monitored sites: the input features and every BN layer, each with its frozen statistics per channel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.layers import BatchNormSpec
from models.reader import VerifiedArtifact

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


def input_site(artifact: VerifiedArtifact) -> Site:
    """Gives back the input features as a site, against the manifest's input standardization."""
    std = artifact.manifest.input_standardization
    mean = np.asarray(std.mean, dtype=np.float64)
    sd = np.asarray(std.std, dtype=np.float64)
    constant = sd == 1.0  # the manifest's marker for a feature with zero variance in training
    return Site(
        name=INPUT,
        kind="input",
        channels=artifact.manifest.input_columns,
        ref_mean=mean,
        ref_var=np.where(constant, 0.0, sd * sd),
        eps=0.0,
        unit=sd,
        offset=mean,
        scale=sd,
        silent=np.zeros(len(sd), dtype=bool),
    )


def bn_site(spec: BatchNormSpec, state: Mapping[str, np.ndarray]) -> Site:
    """Gives back one BN layer as a site, its statistics copied from ``state`` (the network's tensors)."""
    rm = np.array(state[f"{spec.name}.running_mean"], dtype=np.float64)
    rv = np.array(state[f"{spec.name}.running_var"], dtype=np.float64)
    c = len(rm)
    weight = np.array(state[f"{spec.name}.weight"], dtype=np.float64) if spec.affine else np.ones(c)
    bias = np.array(state[f"{spec.name}.bias"], dtype=np.float64) if spec.affine else np.zeros(c)
    silent = np.abs(weight) < 1e-12
    return Site(
        name=spec.name,
        kind="2d" if spec.type == "BatchNorm2d" else "1d",
        channels=[str(i) for i in range(c)],
        ref_mean=rm,
        ref_var=rv,
        eps=float(spec.eps),
        unit=np.sqrt(rv + spec.eps),
        offset=bias,
        scale=np.where(silent, 1.0, weight),
        silent=silent,
    )


def sites_of(artifact: VerifiedArtifact) -> list[Site]:
    """Gives back the input and every BN layer of ``artifact``, in network order, from the unfolded network."""
    state = artifact.state()
    bns = [s for s in artifact.manifest.layers if isinstance(s, BatchNormSpec)]
    return [input_site(artifact)] + [bn_site(spec, state) for spec in bns]
