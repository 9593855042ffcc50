"""The predictor: owns the verified artifact and answers predictions with the frozen statistics.

predictor = Predictor(settings)
predictor.load()                      # verify, freeze, fold BN, self-test; then ready
await predictor.predict(rows)         # rows: float32 (B, F) -> one answer per row
await predictor.predict_json(rows)    # the same answer as JSON bytes, built fast (service/answers.py)
await predictor.predict_float32(rows) # the bulk answer: raw float32 (B, K) bytes and the headers describing it
predictor.bn_stats()                  # the frozen BN statistics, straight from the unfolded network
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from models import Artifact, ArtifactError, load_artifact
from models.bn import batchnorm_layers, fold_batchnorm, model_bn_fingerprint, training_bn_layers
from models.layers import Rescale
from service.answers import AnswerEncoder, Headers
from service.batching import MicroBatcher
from service.drift import DriftMonitor, make_window
from service.errors import NotFound, NotReady
from service.settings import Settings

log = logging.getLogger("bnserve")

FOLD_TOLERANCE = 1e-5
_thread = threading.local()  # per-thread serving state (the torch thread count set there)


class ActivationObserver(Protocol):
    """Sees every serving batch: ``begin`` with the raw input rows, then the batch's ``see`` with each BN
    layer's output (after folding too) as soon as it is computed, then its ``end``.

    Handing each output over at once, rather than keeping them all to the end of the forward, lets every
    activation be freed as early as in an unobserved forward: holding them cost 40% of a 1024-row forward.
    """

    def begin(self, x: torch.Tensor) -> ObservedBatch: ...


class ObservedBatch(Protocol):
    def see(self, name: str, h: torch.Tensor) -> None: ...
    def end(self) -> None: ...


class Predictor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.artifact: Artifact | None = None
        self.serving_model: nn.Module | None = None
        self.batcher: MicroBatcher | None = None
        self.observer: ActivationObserver | None = None
        self.drift: DriftMonitor | None = None  # the observer when BNSERVE_DRIFT_ENABLED
        self.answers: AnswerEncoder | None = None
        self.on_batch: Callable[[int], None] | None = None  # rows of every forward pass (metrics)
        self.on_predict_rows: Callable[[int], None] | None = None  # rows of every /predict request
        self.device = torch.device("cpu")
        self.error: str | None = "not loaded yet"
        self.fold_max_abs_diff: float | None = None
        self.load_seconds: float | None = None
        self._bn_names: set[str] = set()
        self._steps: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []

    @property
    def ready(self) -> bool:
        return self.error is None

    def load(self) -> None:
        """Loads, verifies and freezes the artifact; on failure ``ready`` stays False and ``error`` says why."""
        start = time.perf_counter()
        try:
            self._load()
        except (ArtifactError, OSError, RuntimeError, ValueError) as e:
            self.error = f"artifact refused: {e}"
            log.error("bnserve is NOT ready: %s", self.error)
            return
        self.error = None
        self.load_seconds = time.perf_counter() - start

    def _load(self) -> None:
        keep_freed_memory()
        torch.set_num_threads(self.settings.torch_threads)
        self.device = _pick_device(self.settings.device)
        artifact = load_artifact(self.settings.model_dir, device=self.device)
        model = artifact.model
        if still_training := training_bn_layers(model):
            raise RuntimeError(f"BN layers {still_training} are in training mode")
        if model_bn_fingerprint(model) != artifact.bn_fingerprint:
            raise RuntimeError("the BN fingerprint of the loaded network differs from the manifest's")
        serving = model
        if self.settings.fold_bn:
            serving = fold_batchnorm(model)
            self.fold_max_abs_diff = _max_abs_diff(model, serving, artifact, self.device)
            if not self.fold_max_abs_diff <= FOLD_TOLERANCE:
                raise RuntimeError(
                    f"the folded network differs from the unfolded one by {self.fold_max_abs_diff:.3g} on the "
                    f"canary inputs (tolerance {FOLD_TOLERANCE}); set BNSERVE_FOLD_BN=false to serve unfolded"
                )
        self.artifact, self.serving_model = artifact, serving
        m = artifact.manifest
        self.answers = AnswerEncoder(
            model=m.name, artifact_sha256=artifact.weights_sha256, class_labels=m.class_labels
        )
        self._bn_names = {name for name, _ in batchnorm_layers(model)}
        self._steps = _serving_steps(serving, self._bn_names)
        self.batcher = MicroBatcher(
            self.forward,
            max_batch_rows=self.settings.max_batch_rows,
            max_wait_ms=self.settings.max_wait_ms,
            on_batch=self.on_batch,
        )
        if self.settings.drift_enabled:
            s = self.settings
            window = make_window(s.drift_window_mode, rows=s.drift_window, half_life=s.drift_decay)
            self.drift = DriftMonitor.for_artifact(
                artifact, window, min_rows=s.drift_min_rows, threshold=s.drift_threshold
            )
            self.observer = self.drift

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    # ------------------------------------------------------------------------------------------ serving

    def require_ready(self) -> Artifact:
        if self.artifact is None or self.error is not None:
            raise NotReady(f"model not ready: {self.error}")
        return self.artifact

    @property
    def feature_names(self) -> list[str]:
        return self.require_ready().manifest.feature_names

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Gives back class probabilities (B, K) or regression values (B, 1) for raw rows (B, F)."""
        assert self.artifact is not None
        if getattr(_thread, "torch_threads", None) != self.settings.torch_threads:
            # torch's intra-op thread count is per OS thread: set it where forwards run (the event loop, the
            # batcher's worker), not only in the loader thread, or they use one thread per core.
            torch.set_num_threads(self.settings.torch_threads)
            _thread.torch_threads = self.settings.torch_threads
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            if self.device.type != "cpu":
                xt = xt.to(self.device, non_blocking=True)
            out = self._serving_forward(xt)
            if self.artifact.manifest.task == "classification":
                out = torch.softmax(out, dim=1)
            return out.cpu().numpy()

    def _serving_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.observer is None:
            for _, step in self._steps:
                h = step(h)
            return h
        batch = self.observer.begin(x)
        for name, step in self._steps:
            h = step(h)
            if name in self._bn_names:  # a folded BN's slot holds the fused layer's output
                batch.see(name, h)
        batch.end()
        return h

    async def predict(self, rows: np.ndarray) -> dict[str, Any]:
        """Gives back the /predict answer for ``rows`` (B, F)."""
        answers, out = await self._outputs(rows)
        return answers.answer(out)

    async def predict_json(self, rows: np.ndarray) -> bytes:
        """Gives back the /predict answer for ``rows`` (B, F) as JSON, without a dict per row (service/answers.py)."""
        answers, out = await self._outputs(rows)
        return answers.encode(out)

    async def predict_float32(self, rows: np.ndarray) -> tuple[bytes, Headers]:
        """Gives back the bulk answer for ``rows`` (B, F): raw little-endian float32 (B, K) and its headers."""
        answers, out = await self._outputs(rows)
        return answers.encode_float32(out)

    async def _outputs(self, rows: np.ndarray) -> tuple[AnswerEncoder, np.ndarray]:
        """Gives back the encoder of this artifact's answers and the batch output for ``rows``."""
        self.require_ready()
        assert self.batcher is not None and self.answers is not None
        if self.on_predict_rows is not None:
            self.on_predict_rows(len(rows))
        return self.answers, await self.batcher.submit(rows)

    # ------------------------------------------------------------------------------------------ inspection

    def bn_stats(self, *, layer: str | None = None, vectors: bool = True) -> dict[str, Any]:
        """Gives back every BN layer's frozen statistics (or one layer's), read from the unfolded network."""
        artifact = self.require_ready()
        kind = artifact.manifest.bn_statistics.kind
        layers = [_bn_entry(name, bn, vectors, kind) for name, bn in batchnorm_layers(artifact.model)]
        if layer is not None:
            names = [entry["name"] for entry in layers]
            if layer not in names:
                raise NotFound(f"no BN layer {layer!r}; the BN layers are {names}")
            layers = [entry for entry in layers if entry["name"] == layer]
        std = artifact.manifest.input_standardization
        return {
            "model": artifact.manifest.name,
            "artifact_sha256": artifact.weights_sha256,
            "fingerprint": model_bn_fingerprint(artifact.model),
            "artifact_fingerprint": artifact.bn_fingerprint,
            "statistics": kind,
            "bn_statistics": artifact.manifest.bn_statistics.model_dump(),
            "mode": "eval" if not training_bn_layers(artifact.model) else "train",
            "input_standardization": {
                "layer": std.layer,
                "feature_names": artifact.manifest.feature_names,
                **({"mean": std.mean, "std": std.std} if vectors else {}),
                "summary": {"mean": _summary(std.mean), "std": _summary(std.std)},
            },
            "layers": layers,
            "live": self.live_drift(),
        }

    def live_drift(self) -> dict[str, Any]:
        """Gives back where live traffic stands against these statistics: GET /drift has the details."""
        if self.drift is None:
            return {"href": "/drift", "enabled": False}
        scores = self.drift.scores()
        return {"href": "/drift", "enabled": True, "verdict": scores["verdict"], "score": scores["score"]}

    def metadata(self) -> dict[str, Any]:
        artifact = self.require_ready()
        m = artifact.manifest
        return {
            "name": m.name,
            "task": m.task,
            "feature_names": m.feature_names,
            "class_labels": m.class_labels,
            "target_name": m.target_name,
            "input_shape": m.input_shape,
            "metrics": m.metrics,
            "training": m.training,
            "artifact_sha256": artifact.weights_sha256,
            "bn_fingerprint": artifact.bn_fingerprint,
            "created_at": m.created_at,
            "format_version": m.format_version,
            "versions": m.versions.model_dump(),
            "batchnorm": [b.model_dump() for b in artifact.batchnorm],
            "bn_statistics": m.bn_statistics.model_dump(),
            "serving": {
                "device": str(self.device),
                "bn_folded": self.settings.fold_bn,
                "fold_max_abs_diff": self.fold_max_abs_diff,
                "max_rows": self.settings.max_rows,
                "max_batch_rows": self.settings.max_batch_rows,
                "max_wait_ms": self.settings.max_wait_ms,
                "torch_threads": self.settings.torch_threads,
            },
        }


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed blocks of up to 32 MiB for reuse; gives back whether it could.

    A 1,024-row forward allocates and frees a few 1 MB activations. By default glibc serves blocks that
    large with mmap, or trims them off the heap once freed, so the next request's forward gets fresh
    pages: ~740 page faults per 1,024-row request, measured in process, about a third of its time. With
    the thresholds raised, freed blocks are reused: 7 faults per request. (PyTorch's CPU tuning guide
    makes the same point with jemalloc or tcmalloc.) The cost: up to 512 MiB of freed memory may stay
    with the process rather than go back to the OS. Elsewhere than glibc (musl, macOS) nothing changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 512 << 20))


def _pick_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("BNSERVE_DEVICE=cuda but no CUDA device is available")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        _full_float32_on_cuda()
    return torch.device(setting)


def _full_float32_on_cuda() -> None:
    """Turns TF32 off for CUDA matmuls and cuDNN convolutions in this process.

    cuDNN convolutions use TF32 by default on Ampere and later: a 10-bit mantissa puts a CNN's answers about
    1e-3 away from the CPU's and breaks the 1e-5 fold check. Serving gives float32's answers on every device.
    """
    # The legacy flags: torch 2.9's fp32_precision setters exist too, but mixing the two APIs makes torch
    # refuse to read either (RuntimeError), and a user's code may still read allow_tf32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _serving_steps(
    model: nn.Module, bn_names: set[str]
) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """Gives back ``(name, layer.forward)`` for each layer of ``model`` that computes something in eval mode.

    Calling ``forward`` directly skips ``nn.Module.__call__``'s hook bookkeeping (a few µs a layer, a tenth
    of a one-row forward; the serving copy has no hooks). Eval-mode Dropout and the Identity left where a BN
    was folded are dropped, except that a folded BN's slot stays, as a no-op, for the observer to read.
    """
    steps: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Identity | nn.Dropout) and name not in bn_names:
            continue
        steps.append((name, _identity if isinstance(layer, nn.Identity) else layer.forward))
    return steps


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _max_abs_diff(model: nn.Module, folded: nn.Module, artifact: Artifact, device: torch.device) -> float:
    """Gives back the largest difference between the two networks' outputs on the canary inputs, in the
    network's own units: before a final ``Rescale`` (regression), whose multiplication by the target's
    standard deviation would scale float32 rounding along with it (~2e-5 for values near 300)."""
    x = torch.tensor(artifact.manifest.canary.inputs, dtype=torch.float32, device=device)
    last = list(model.children())[-1]
    scale = last.scale if isinstance(last, Rescale) else 1.0
    with torch.inference_mode():
        return float(((model(x) - folded(x)) / scale).abs().max())


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "mean": math.fsum(values) / len(values)}


def _bn_entry(name: str, bn: nn.Module, vectors: bool, statistics: str) -> dict[str, Any]:
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
    tensors = {"running_mean": bn.running_mean, "running_var": bn.running_var}
    if bn.affine:
        tensors |= {"weight": bn.weight, "bias": bn.bias}
    lists = {key: t.detach().cpu().tolist() for key, t in tensors.items()}
    return {
        "name": name,
        "kind": "2d" if isinstance(bn, nn.BatchNorm2d) else "1d",
        "num_features": bn.num_features,
        "momentum": bn.momentum,
        "eps": bn.eps,
        "num_batches_tracked": int(bn.num_batches_tracked),
        "statistics": statistics,
        "training": bn.training,
        **(lists if vectors else {}),
        "summary": {key: _summary(v) for key, v in lists.items()},
    }
