"""The small image CNN for 8x8 digits: ``Conv2d -> BatchNorm2d -> ReLU`` blocks, a pool, a linear head.

Rows arrive flat (64 pixel features, like any tabular row), are standardized per pixel, then reshaped:

    cfg = CNNConfig(num_classes=10)
    net = build_network(cnn_layers(cfg))   # input_norm, reshape, conv1, bn1, act1, conv2, bn2, act2, pool, ...
"""

from __future__ import annotations

from dataclasses import dataclass

from models.layers import (
    Conv2dSpec,
    DropoutSpec,
    FlattenSpec,
    LayerSpec,
    LinearSpec,
    MaxPool2dSpec,
    ReshapeSpec,
    StandardizeSpec,
)
from models.mlp import BNPosition, block_layers


@dataclass
class CNNConfig:
    num_classes: int
    image_shape: tuple[int, int, int] = (1, 8, 8)  # (C, H, W)
    channels: tuple[int, ...] = (16, 32)  # one block per entry
    kernel_size: int = 3
    activation: str = "relu"
    dropout: float = 0.0
    bn_position: BNPosition = "before_activation"
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5


def cnn_layers(cfg: CNNConfig) -> list[LayerSpec]:
    """Gives back the layer specs of the CNN that ``cfg`` describes."""
    c, h, w = cfg.image_shape
    if h % 2 or w % 2:
        raise ValueError(f"image height and width must be even for the 2x2 pool, got {h}x{w}")
    layers: list[LayerSpec] = [
        StandardizeSpec(name="input_norm", num_features=c * h * w),
        ReshapeSpec(name="reshape", shape=(c, h, w)),
    ]
    for i, out in enumerate(cfg.channels, start=1):
        conv = Conv2dSpec(
            name=f"conv{i}",
            in_channels=c,
            out_channels=out,
            kernel_size=cfg.kernel_size,
            padding=cfg.kernel_size // 2,
            bias=cfg.bn_position != "before_activation",
        )
        layers += block_layers(
            i,
            conv,
            out,
            "BatchNorm2d",
            activation=cfg.activation,
            bn_position=cfg.bn_position,
            momentum=cfg.bn_momentum,
            eps=cfg.bn_eps,
        )
        c = out
    layers += [MaxPool2dSpec(name="pool", kernel_size=2), FlattenSpec(name="flatten")]
    if cfg.dropout > 0:
        layers.append(DropoutSpec(name="drop", p=cfg.dropout))
    layers.append(LinearSpec(name="head", in_features=c * (h // 2) * (w // 2), out_features=cfg.num_classes))
    return layers
