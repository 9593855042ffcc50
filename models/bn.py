"""BatchNorm helpers shared by training and serving: list, freeze, fingerprint and fold BN layers.

Eval-mode BN is a fixed per-channel affine map of its input::

    scale = weight * (running_var + eps).rsqrt()
    shift = bias - running_mean * scale
    y = x * scale + shift          # per channel; no dependence on the other rows of the batch
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping
from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from models.reader import BN_BUFFERS
from models.reader import bn_fingerprint as reader_bn_fingerprint

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def batchnorm_layers(model: nn.Module) -> Iterator[tuple[str, _BatchNorm]]:
    """Yields ``(name, module)`` for every BN layer, in network order."""
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            yield name, module


def freeze(model: ModuleT) -> ModuleT:
    """Gives back ``model`` in eval mode with no parameter requiring grad (BN then uses running stats)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def training_bn_layers(model: nn.Module) -> list[str]:
    """Gives back the names of BN layers still in training mode (they would use batch statistics)."""
    return [name for name, bn in batchnorm_layers(model) if bn.training]


def bn_fingerprint(tensors: Mapping[str, torch.Tensor], bn_names: list[str]) -> str:
    """Gives back the SHA-256 over every BN buffer, in network order (``models.reader.bn_fingerprint``, which
    docs/ARTIFACT.md specifies, over these tensors on the CPU)."""
    keys = [f"{name}.{buf}" for name in bn_names for buf in BN_BUFFERS]
    return reader_bn_fingerprint({k: tensors[k].detach().cpu().numpy() for k in keys}, bn_names)


def model_bn_fingerprint(model: nn.Module) -> str:
    """Gives back ``bn_fingerprint`` of a live model's BN buffers."""
    return bn_fingerprint(model.state_dict(), [name for name, _ in batchnorm_layers(model)])


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """Gives back an eval-mode copy of ``model`` where each BN that directly follows a Linear or Conv2d
    is folded into it (``torch.nn.utils.fusion``) and replaced by ``nn.Identity``.

    BN layers placed after an activation have no preceding affine layer to fold into, and BN layers
    without affine parameters are not folded either; they stay as eval-mode BN, which is already a
    per-channel affine map.
    """
    folded = copy.deepcopy(model).eval()
    for (prev_name, prev), (name, module) in itertools.pairwise(list(folded.named_children())):
        if not isinstance(module, _BatchNorm) or not module.affine:
            continue
        if isinstance(prev, nn.Linear) and isinstance(module, nn.BatchNorm1d):
            setattr(folded, prev_name, fuse_linear_bn_eval(prev, module))
        elif isinstance(prev, nn.Conv2d) and isinstance(module, nn.BatchNorm2d):
            setattr(folded, prev_name, fuse_conv_bn_eval(prev, module))
        else:
            continue
        setattr(folded, name, nn.Identity())
    return freeze(folded)
