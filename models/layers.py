"""Layer specifications: the architecture as data.

The manifest stores ``layers``, an ordered list of these specs. ``build_network(specs)`` (``models/modules.py``)
rebuilds the exact ``nn.Sequential`` the training side exported, so serving never imports training code; the
lean runtime (``models/numpy_net.py``) computes the same network with numpy. The state-dict key of every
tensor is ``<layer name>.<tensor name>`` (for example ``bn1.running_mean``).

This module never imports torch: the manifest schema and the lean runtime build on it. The torch modules are
still importable from here (``from models.layers import Rescale``); they are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


# The torch side of the specs lives in models/modules.py; these names are served from there on first use
# (PEP 562), so that importing the specs, the manifest or the lean runtime never imports torch.
TORCH_MODULES = ("Standardize", "Reshape", "Rescale", "build_layer", "build_network")

if TYPE_CHECKING:
    from models.modules import Rescale, Reshape, Standardize, build_layer, build_network  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in TORCH_MODULES:
        from models import modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
