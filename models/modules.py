"""The torch modules that the layer specs (``models/layers.py``) describe, and the one builder.

net = build_network(mlp_layers(cfg))   # nn.Sequential named and ordered as the specs
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from models.layers import (
    ActivationSpec,
    BatchNormSpec,
    Conv2dSpec,
    DropoutSpec,
    FlattenSpec,
    LayerSpec,
    LinearSpec,
    MaxPool2dSpec,
    RescaleSpec,
    ReshapeSpec,
    StandardizeSpec,
)


class Standardize(nn.Module):
    """Input standardization with fixed training-split statistics, stored as buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Rescale(nn.Module):
    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(num_features))
        self.register_buffer("shift", torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "ReLU": nn.ReLU,
    "GELU": nn.GELU,
    "SiLU": nn.SiLU,
    "Tanh": nn.Tanh,
}


def build_layer(spec: LayerSpec) -> nn.Module:
    """Gives back the module that ``spec`` describes, freshly initialized."""
    match spec:
        case StandardizeSpec():
            return Standardize(spec.num_features)
        case ReshapeSpec():
            return Reshape(spec.shape)
        case LinearSpec():
            return nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        case Conv2dSpec():
            return nn.Conv2d(
                spec.in_channels,
                spec.out_channels,
                spec.kernel_size,
                stride=spec.stride,
                padding=spec.padding,
                bias=spec.bias,
            )
        case BatchNormSpec():
            bn_cls = nn.BatchNorm1d if spec.type == "BatchNorm1d" else nn.BatchNorm2d
            return bn_cls(spec.num_features, eps=spec.eps, momentum=spec.momentum, affine=spec.affine)
        case ActivationSpec():
            return _ACTIVATIONS[spec.type]()
        case DropoutSpec():
            return nn.Dropout(spec.p)
        case MaxPool2dSpec():
            return nn.MaxPool2d(spec.kernel_size)
        case FlattenSpec():
            return nn.Flatten()
        case RescaleSpec():
            return Rescale(spec.num_features)
    raise TypeError(f"unknown layer spec {spec!r}")


def build_network(specs: list[LayerSpec]) -> nn.Sequential:
    """Gives back an ``nn.Sequential`` whose children are named and ordered as in ``specs``."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"layer names must be unique, repeated: {duplicates}")
    return nn.Sequential(OrderedDict((spec.name, build_layer(spec)) for spec in specs))
