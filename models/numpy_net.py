"""The eval-mode network in numpy, float32: one step per layer, BN optionally folded into the layer before it.

    net = build_network(manifest.layers, tensors)              # the network as exported
    net = build_network(manifest.layers, tensors, fold=True)   # each BN after a Linear/Conv2d folded into it
    net(rows)                                                  # (B, num_outputs), like the torch network
    net.forward(rows, see=lambda name, y: ...)                 # and each BN slot's output as it is computed

docs/ARTIFACT.md's layer table is the specification; the torch modules (``models/modules.py``) compute the
same function. Images go through the convolutions channels-last, (B, H, W, C), so a convolution is one
matmul over the im2col windows and BN is a broadcast over the last axis; ``Flatten`` gives back torch's
(C, H, W) order. A BN slot's output is handed to ``see`` as torch lays it out, (B, C) or (B, C, H, W) (a
view, not a copy).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.errors import UnsupportedLayerError
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

Op = Callable[[np.ndarray], np.ndarray]
See = Callable[[str, np.ndarray], None]
Layout = Literal["rows", "images"]  # (B, F) or channels-last (B, H, W, C)


@dataclass(frozen=True)
class Step:
    """One computing layer. ``op`` None: the slot of a BN folded into the layer before it (a no-op that the
    observer still sees). ``inplace_op``: the same function allowed to overwrite its input (an activation
    whose input nobody else holds), used when nothing observes the forward."""

    name: str
    op: Op | None
    bn: bool = False
    images: bool = False  # the output is channels-last (B, H, W, C)
    inplace_op: Op | None = None


class Network:
    """The frozen network as numpy steps. Thread-safe: a forward only reads the weights."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.bn_names = [s.name for s in steps if s.bn]
        # Unobserved forwards skip folded BN slots and overwrite their own temporaries where they can.
        self._ops = [s.inplace_op or s.op for s in steps if s.op is not None]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Gives back the outputs (B, num_outputs) for raw float32 rows (B, F)."""
        for op in self._ops:
            x = op(x)
        return x

    def forward(self, x: np.ndarray, see: See | None = None) -> np.ndarray:
        """Gives back the outputs for ``x``; ``see(name, y)`` gets each BN slot's output as it is computed."""
        if see is None:
            return self(x)
        for step in self.steps:
            if step.op is not None:
                x = step.op(x)
            if step.bn:
                see(step.name, x.transpose(0, 3, 1, 2) if step.images else x)
        return x


def build_network(
    layers: list[LayerSpec], tensors: Mapping[str, np.ndarray], *, fold: bool = False
) -> Network:
    """Gives back the numpy network of ``layers`` with weights ``tensors`` (float32, as stored).

    ``fold``: each affine BN right after a Linear (BatchNorm1d) or Conv2d (BatchNorm2d) is folded into that
    layer's weight and bias the way ``torch.nn.utils.fusion`` folds it; other BN layers stay a per-channel
    scale and shift. Raises ``UnsupportedLayerError`` for a layer this runtime does not compute.
    """
    steps: list[Step] = []
    layout: Layout = "rows"
    i = 0
    while i < len(layers):
        spec = layers[i]
        t = {k.removeprefix(f"{spec.name}."): v for k, v in tensors.items() if k.startswith(f"{spec.name}.")}
        following = layers[i + 1] if i + 1 < len(layers) else None
        folded = fold and _folds_into(spec, following)
        if folded:
            assert isinstance(following, BatchNormSpec)
            bn = {
                k.removeprefix(f"{following.name}."): v
                for k, v in tensors.items()
                if k.startswith(f"{following.name}.")
            }
            t = _fold(t, bn, following.eps)
        step, layout = _step(spec, t, layout)
        if step is not None:
            steps.append(step)
        if folded:
            assert following is not None
            steps.append(Step(following.name, None, bn=True, images=layout == "images"))
            i += 1
        i += 1
    return Network(steps)


def _folds_into(spec: LayerSpec, following: LayerSpec | None) -> bool:
    if not isinstance(following, BatchNormSpec) or not following.affine:
        return False
    return (isinstance(spec, LinearSpec) and following.type == "BatchNorm1d") or (
        isinstance(spec, Conv2dSpec) and following.type == "BatchNorm2d"
    )


def _fold(t: dict[str, np.ndarray], bn: dict[str, np.ndarray], eps: float) -> dict[str, np.ndarray]:
    """Gives back the weight and bias of a Linear/Conv2d with the BN after it folded in, in float32 and in
    the order ``torch.nn.utils.fusion.fuse_linear_bn_weights`` computes them."""
    weight = t["weight"]
    bias = t.get("bias", np.zeros(weight.shape[0], dtype=np.float32))
    scale = bn["weight"] * (np.float32(1.0) / np.sqrt(bn["running_var"] + np.float32(eps)))
    fused_weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    fused_bias = (bias - bn["running_mean"]) * scale + bn["bias"]
    return {"weight": fused_weight.astype(np.float32), "bias": fused_bias.astype(np.float32)}


def _step(spec: LayerSpec, t: dict[str, np.ndarray], layout: Layout) -> tuple[Step | None, Layout]:
    """Gives back the step computing ``spec`` on input laid out as ``layout``, and its output's layout."""
    name, images = spec.name, layout == "images"
    match spec:
        case StandardizeSpec() if not images:
            mean, std = t["mean"], t["std"]
            return Step(name, lambda x: (x - mean) / std), layout
        case ReshapeSpec(shape=shape) if not images and len(shape) == 3:
            c, h, w = shape
            return Step(
                name, lambda x: x.reshape(len(x), c, h, w).transpose(0, 2, 3, 1), images=True
            ), "images"
        case ReshapeSpec(shape=shape) if not images and len(shape) == 1:
            return Step(name, lambda x: x.reshape(len(x), shape[0])), layout
        case LinearSpec() if not images:
            return Step(name, _linear(t["weight"], t.get("bias"))), layout
        case Conv2dSpec() if images:
            return Step(name, _conv2d(spec, t["weight"], t.get("bias")), images=True), layout
        case BatchNormSpec():
            if (spec.type == "BatchNorm2d") != images:
                raise UnsupportedLayerError(
                    f"layer {name!r} ({spec.type}) gets {'images' if images else 'rows'}: the lean runtime "
                    "computes BatchNorm1d on rows and BatchNorm2d on images; serve with the torch runtime"
                )
            return Step(name, _affine(*_bn_scale_shift(spec, t)), bn=True, images=images), layout
        case ActivationSpec():
            op, inplace = _ACTIVATIONS[spec.type]
            return Step(name, op, images=images, inplace_op=inplace), layout
        case DropoutSpec():
            return None, layout  # the identity at eval
        case MaxPool2dSpec(kernel_size=k) if images:
            return Step(name, lambda x: _maxpool2d(x, k), images=True), layout
        case FlattenSpec():
            if images:
                return Step(name, lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), -1)), "rows"
            return Step(name, lambda x: x.reshape(len(x), -1)), layout
        case RescaleSpec() if not images:
            return Step(name, _affine(t["scale"], t["shift"])), layout
    raise UnsupportedLayerError(
        f"layer {name!r} ({spec.type}) on {'images' if images else 'rows'} is not something the lean runtime "
        "computes; serve this artifact with the torch runtime"
    )


def _linear(weight: np.ndarray, bias: np.ndarray | None) -> Op:
    wt = np.ascontiguousarray(weight.T)  # (I, O): x @ wt reads both row-major

    def linear(x: np.ndarray) -> np.ndarray:
        y = x @ wt
        if bias is not None:
            y += bias  # y is this call's own array
        return y

    return linear


def _conv2d(spec: Conv2dSpec, weight: np.ndarray, bias: np.ndarray | None) -> Op:
    k, s, p = spec.kernel_size, spec.stride, spec.padding
    w = np.ascontiguousarray(weight.reshape(len(weight), -1).T)  # (C*k*k, O), rows in (c, u, v) order

    def conv2d(x: np.ndarray) -> np.ndarray:  # (B, H, W, C) -> (B, H_out, W_out, O)
        if p:
            x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]  # (B, H_out, W_out, C, k, k)
        b, h, w_out = windows.shape[:3]
        y = windows.reshape(b * h * w_out, -1) @ w  # im2col: one matmul over every window
        if bias is not None:
            y += bias
        return y.reshape(b, h, w_out, -1)

    return conv2d


def _bn_scale_shift(spec: BatchNormSpec, t: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Gives back eval-mode BN as ``y = x * scale + shift`` per channel, in float32."""
    inv_std = np.float32(1.0) / np.sqrt(t["running_var"] + np.float32(spec.eps))
    weight = t["weight"] if spec.affine else np.ones_like(inv_std)
    bias = t["bias"] if spec.affine else np.zeros_like(inv_std)
    scale = (weight * inv_std).astype(np.float32)
    return scale, (bias - t["running_mean"] * scale).astype(np.float32)


def _affine(scale: np.ndarray, shift: np.ndarray) -> Op:
    def affine(x: np.ndarray) -> np.ndarray:  # x * scale + shift per channel (the last axis)
        y = x * scale
        y += shift
        return y

    return affine


def _maxpool2d(x: np.ndarray, k: int) -> np.ndarray:
    b, h, w, c = x.shape
    x = x[:, : h // k * k, : w // k * k]
    return x.reshape(b, h // k, k, w // k, k, c).max(axis=(2, 4))


def _zero_block() -> np.ndarray:
    """Gives back ``ZERO_BLOCK_BYTES`` of read-only float32 zeros that hold no memory: an anonymous, private,
    read-only mapping, whose pages all read as the kernel's one zero page (not counted in the resident
    size; a shared mapping, mmap's default, would be backed by real pages once read). Where mmap cannot map
    read-only (not on Linux or macOS), an empty array: ReLU then takes numpy's scalar path."""
    if not hasattr(mmap, "PROT_READ"):
        return np.zeros(0, dtype=np.float32)
    return np.frombuffer(
        mmap.mmap(-1, ZERO_BLOCK_BYTES, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ), dtype=np.float32
    )


ZERO_BLOCK_BYTES = 64 << 20  # activations of up to 16M float32 values take the fast ReLU (below)
_ZEROS = _zero_block()


def _zeros_for(x: np.ndarray) -> np.ndarray | int:
    """Gives back float32 zeros shaped like ``x`` (a read-only view of ``_ZEROS``) where ``x`` fits, else 0.

    numpy's maximum against an array runs its SIMD loop; against a scalar (``np.maximum(x, 0)``) numpy 2.4
    took 100 to 150 µs on a (1024, 256) float32 activation where the array took 25 to 40 µs (AMD EPYC,
    docs/PERFORMANCE.md). The answers are the same: the scalar is taken as a float32 0 either way."""
    if x.dtype == np.float32 and x.size <= _ZEROS.size:
        return _ZEROS[: x.size].reshape(x.shape)
    return 0


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, _zeros_for(x))


def _relu_inplace(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, _zeros_for(x), out=x)


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact erf form, ``0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2)``, computed in float64."""
    z = x.astype(np.float64) * -(0.5**0.5)
    return (0.5 * x * _erfc(z)).astype(np.float32)


def _erfc(z: np.ndarray) -> np.ndarray:
    """The complementary error function, relative error below 1.2e-7 everywhere (Numerical Recipes'
    Chebyshev fit, ``erfcc``). Written out rather than taken from scipy.special: scipy would add about
    100 MB to the image without torch, and this is its one use."""
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = -1.26551223 + t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t
                    * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))
                )
            )
        )
    )
    r = t * np.exp(-a * a + poly)
    return np.where(z >= 0, r, 2.0 - r)


def _silu(x: np.ndarray) -> np.ndarray:
    return x * (np.float32(0.5) * (np.float32(1.0) + np.tanh(x * np.float32(0.5))))  # x * sigmoid(x)


_ACTIVATIONS: dict[str, tuple[Op, Op | None]] = {  # type -> (out of place, in place)
    "ReLU": (_relu, _relu_inplace),
    "GELU": (_gelu, None),
    "SiLU": (_silu, None),
    "Tanh": (np.tanh, lambda x: np.tanh(x, out=x)),
}


FEW_CLASSES = 16  # at most this many classes: softmax reduces column by column (below)


def softmax(z: np.ndarray) -> np.ndarray:
    """Gives back the softmax of each row of logits ``z`` (B, K), in z's dtype.

    With few classes the max and the sum run over the batch one class column at a time: numpy reduces a
    short last axis row by row, and on (1024, 2) that took 58 µs where the columns take 14 µs. Both sum in
    class order, so the answers are the same.
    """
    k = z.shape[1]
    if k > FEW_CLASSES or len(z) <= 8:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return e
    m = z[:, 0].copy()
    for j in range(1, k):
        np.maximum(m, z[:, j], out=m)
    e = np.exp(z - m[:, None])
    total = e[:, 0].copy()
    for j in range(1, k):
        total += e[:, j]
    e /= total[:, None]
    return e
