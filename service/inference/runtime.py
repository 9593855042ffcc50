"""The forward step: raw rows (B, F) in, class probabilities (B, K) or regression values (B, 1) out.

    runtime = TorchRuntime(serving_model, task="classification", device=device, torch_threads=1,
                           observed=bn_names, observer=monitor)
    out = runtime.forward(rows)       # numpy float32 (B, F) -> numpy float32 (B, K)

With ``keep_logits=True`` a classifier's forward gives (B, 2K): the probabilities, then the logits they are the
softmax of, so that one forward pass answers both /predict and an Open Inference Protocol request that asks for
the ``logits`` output (the predictor splits them).

A runtime is anything with that ``forward``; the predictor and the micro-batcher need nothing else, so a
runtime that is not torch's stands beside this one (``LeanRuntime``, service/inference/lean.py).
``load_torch`` verifies an artifact and builds this runtime for it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import nn

from models import Artifact, load_artifact
from models.artifact import canary_tensor
from models.bn import batchnorm_layers, fold_batchnorm, model_bn_fingerprint, training_bn_layers
from models.device import pick_device
from models.layers import Rescale
from service.inference.loaded import FOLD_TOLERANCE, Loaded, fold_refused
from service.inference.tuning import full_float32_on_cuda, use_torch_threads
from service.monitoring.drift import MonitorFactory
from service.settings import Settings

Step = Callable[[torch.Tensor], torch.Tensor]


class Runtime(Protocol):
    def forward(self, x: np.ndarray) -> np.ndarray: ...


class ActivationObserver(Protocol):
    """Sees every serving batch: ``begin`` with the raw input rows, then the batch's ``see`` with each BN
    layer's output (after folding too) as soon as it is computed, then its ``end``.

    Handing each output over at once, rather than keeping them all to the end of the forward, lets every
    activation be freed as early as in an unobserved forward.
    """

    def begin(self, x: torch.Tensor) -> ObservedBatch: ...


class ObservedBatch(Protocol):
    def see(self, name: str, h: torch.Tensor) -> None: ...
    def end(self) -> None: ...


class TorchRuntime:
    """Runs a serving network layer by layer under ``torch.inference_mode``, showing ``observed`` layers'
    outputs to the observer."""

    def __init__(
        self,
        model: nn.Module,
        *,
        task: Literal["classification", "regression"],
        device: torch.device,
        torch_threads: int,
        observed: Collection[str] = (),
        observer: ActivationObserver | None = None,
        keep_logits: bool = False,
    ) -> None:
        self.device = device
        self.torch_threads = torch_threads
        self.observer = observer
        self._softmax = task == "classification"
        self._keep_logits = keep_logits and self._softmax
        self._observed = frozenset(observed)
        self._steps = serving_steps(model, self._observed)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Gives back class probabilities (B, K), with ``keep_logits`` followed by the logits (B, 2K), or
        regression values (B, 1), for raw rows (B, F)."""
        use_torch_threads(self.torch_threads)
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            if self.device.type != "cpu":
                xt = xt.to(self.device, non_blocking=True)
            out = self._forward(xt)
            if self._keep_logits:
                out = torch.cat((torch.softmax(out, dim=1), out), dim=1)
            elif self._softmax:
                out = torch.softmax(out, dim=1)
            return out.cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.observer is None:
            for _, step in self._steps:
                h = step(h)
            return h
        batch = self.observer.begin(x)
        for name, step in self._steps:
            h = step(h)
            if name in self._observed:  # a folded BN's slot holds the fused layer's output
                batch.see(name, h)
        batch.end()
        return h


def serving_steps(model: nn.Module, observed: Collection[str]) -> list[tuple[str, Step]]:
    """Gives back ``(name, layer.forward)`` for each layer of ``model`` that computes something in eval mode.

    Calling ``forward`` directly skips ``nn.Module.__call__``'s hook bookkeeping, a noticeable share of a
    one-row forward (the serving copy has no hooks). Eval-mode Dropout and the Identity left where a BN was
    folded are dropped, except that an observed slot stays, as a no-op, for the observer to read.
    """
    steps: list[tuple[str, Step]] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Identity | nn.Dropout) and name not in observed:
            continue
        steps.append((name, _identity if isinstance(layer, nn.Identity) else layer.forward))
    return steps


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def load_torch(settings: Settings, monitor: MonitorFactory | None, artifact_dir: Path) -> Loaded:
    """Gives back the artifact at ``artifact_dir`` verified, frozen and folded, served by torch."""
    torch.set_num_threads(settings.torch_threads)
    device = pick_device(settings.device)
    if device.type == "cuda":
        full_float32_on_cuda()
    artifact = load_artifact(artifact_dir, device=device)
    model = artifact.model
    if still_training := training_bn_layers(model):
        raise RuntimeError(f"BN layers {still_training} are in training mode")
    if model_bn_fingerprint(model) != artifact.bn_fingerprint:
        raise RuntimeError("the BN fingerprint of the loaded network differs from the manifest's")
    serving, diff = model, None
    if settings.fold_bn:
        serving = fold_batchnorm(model)
        diff = _max_abs_diff(model, serving, artifact, device)
        if not diff <= FOLD_TOLERANCE:
            raise RuntimeError(fold_refused(diff))
    drift = monitor(artifact) if monitor is not None else None
    runtime = TorchRuntime(
        serving,
        task=artifact.manifest.task,
        device=device,
        torch_threads=settings.torch_threads,
        observed=[name for name, _ in batchnorm_layers(model)],
        observer=drift,
        keep_logits=artifact.manifest.task == "classification",  # the predictor splits them off
    )
    return Loaded(artifact, runtime, str(device), diff, drift, serving_model=serving)


def _max_abs_diff(model: nn.Module, folded: nn.Module, artifact: Artifact, device: torch.device) -> float:
    """Gives back the largest difference between the two networks' outputs on the canary inputs, in the
    network's own units: before a final ``Rescale`` (regression), whose multiplication by the target's
    standard deviation would scale float32 rounding along with it."""
    x = canary_tensor(artifact.manifest, artifact.path).to(device)  # raw rows encoded, with preprocessing
    last = list(model.children())[-1]
    scale = last.scale if isinstance(last, Rescale) else 1.0
    with torch.inference_mode():
        return float(((model(x) - folded(x)) / scale).abs().max())
