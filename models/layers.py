"""Layer specifications: the architecture as data, and the one builder that turns it into a network.

The manifest stores ``layers``, an ordered list of these specs. ``build_network(specs)`` rebuilds the exact
``nn.Sequential`` the training side exported, so serving never imports training code. The state-dict key of
every tensor is ``<layer name>.<tensor name>`` (for example ``bn1.running_mean``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

LayerName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: LayerName


class StandardizeSpec(_Spec):
    """``(x - mean) / std`` per input feature; buffers ``mean`` and ``std`` of shape (num_features,)."""

    type: Literal["Standardize"] = "Standardize"
    num_features: int = Field(gt=0)


class ReshapeSpec(_Spec):
    """Reshape each row to ``shape`` (the batch dimension is kept)."""

    type: Literal["Reshape"] = "Reshape"
    shape: tuple[int, ...]


class LinearSpec(_Spec):
    type: Literal["Linear"] = "Linear"
    in_features: int = Field(gt=0)
    out_features: int = Field(gt=0)
    bias: bool = True


class Conv2dSpec(_Spec):
    type: Literal["Conv2d"] = "Conv2d"
    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    kernel_size: int = Field(gt=0)
    stride: int = Field(default=1, gt=0)
    padding: int = Field(default=0, ge=0)
    bias: bool = True


class BatchNormSpec(_Spec):
    """BatchNorm1d or BatchNorm2d with PyTorch's momentum convention (running = (1-m)*running + m*batch)."""

    type: Literal["BatchNorm1d", "BatchNorm2d"]
    num_features: int = Field(gt=0)
    eps: float = Field(gt=0)
    momentum: float = Field(gt=0, le=1)
    affine: bool = True


class ActivationSpec(_Spec):
    type: Literal["ReLU", "GELU", "SiLU", "Tanh"]


class DropoutSpec(_Spec):
    type: Literal["Dropout"] = "Dropout"
    p: float = Field(ge=0, lt=1)


class MaxPool2dSpec(_Spec):
    type: Literal["MaxPool2d"] = "MaxPool2d"
    kernel_size: int = Field(gt=0)


class FlattenSpec(_Spec):
    type: Literal["Flatten"] = "Flatten"


class RescaleSpec(_Spec):
    """``x * scale + shift`` per output; buffers ``scale`` and ``shift`` (undoes target standardization)."""

    type: Literal["Rescale"] = "Rescale"
    num_features: int = Field(gt=0)


LayerSpec = Annotated[
    StandardizeSpec
    | ReshapeSpec
    | LinearSpec
    | Conv2dSpec
    | BatchNormSpec
    | ActivationSpec
    | DropoutSpec
    | MaxPool2dSpec
    | FlattenSpec
    | RescaleSpec,
    Field(discriminator="type"),
]


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
