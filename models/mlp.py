"""The tabular MLP: input standardization, then ``Linear -> BatchNorm1d -> activation`` blocks, then a head.

cfg = MLPConfig(num_features=30, num_outputs=2, hidden=(256, 256))
net = build_network(mlp_layers(cfg))   # nn.Sequential: input_norm, fc1, bn1, act1, ..., head
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.layers import (
    ActivationSpec,
    BatchNormSpec,
    DropoutSpec,
    LayerSpec,
    LinearSpec,
    RescaleSpec,
    StandardizeSpec,
)

BNPosition = Literal["before_activation", "after_activation"]
ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU", "tanh": "Tanh"}


@dataclass
class MLPConfig:
    num_features: int
    num_outputs: int
    hidden: tuple[int, ...] = (256, 256)  # one block per entry: depth = len(hidden), widths as given
    activation: str = "relu"  # one of ACTIVATIONS
    dropout: float = 0.0
    bn_position: BNPosition = "before_activation"
    bn_momentum: float = 0.1  # PyTorch convention; Keras momentum k corresponds to 1 - k
    bn_eps: float = 1e-5
    rescale_output: bool = False  # regression: undo the target standardization inside the network


def block_layers(
    i: int,
    make_weight: LayerSpec,
    num_features: int,
    bn_type: Literal["BatchNorm1d", "BatchNorm2d"],
    *,
    activation: str,
    bn_position: BNPosition,
    momentum: float,
    eps: float,
) -> list[LayerSpec]:
    """Gives back one block: the weight layer, then BN and activation in the configured order."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if bn_position not in ("before_activation", "after_activation"):
        raise ValueError(
            f"bn_position must be 'before_activation' or 'after_activation', got {bn_position!r}"
        )
    bn = BatchNormSpec(name=f"bn{i}", type=bn_type, num_features=num_features, eps=eps, momentum=momentum)
    act = ActivationSpec(name=f"act{i}", type=ACTIVATIONS[activation])
    return [make_weight, bn, act] if bn_position == "before_activation" else [make_weight, act, bn]


def mlp_layers(cfg: MLPConfig) -> list[LayerSpec]:
    """Gives back the layer specs of the MLP that ``cfg`` describes."""
    layers: list[LayerSpec] = [StandardizeSpec(name="input_norm", num_features=cfg.num_features)]
    width = cfg.num_features
    for i, h in enumerate(cfg.hidden, start=1):
        # A bias right before BN is cancelled by the mean subtraction, so it is left out.
        fc = LinearSpec(
            name=f"fc{i}", in_features=width, out_features=h, bias=cfg.bn_position != "before_activation"
        )
        layers += block_layers(
            i,
            fc,
            h,
            "BatchNorm1d",
            activation=cfg.activation,
            bn_position=cfg.bn_position,
            momentum=cfg.bn_momentum,
            eps=cfg.bn_eps,
        )
        if cfg.dropout > 0:
            layers.append(DropoutSpec(name=f"drop{i}", p=cfg.dropout))
        width = h
    layers.append(LinearSpec(name="head", in_features=width, out_features=cfg.num_outputs))
    if cfg.rescale_output:
        layers.append(RescaleSpec(name="output_scale", num_features=cfg.num_outputs))
    return layers
