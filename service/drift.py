"""The drift monitor: live traffic at every BN layer, and at the input, against the frozen statistics.

Every BN layer carries the training distribution at its depth: per channel, ``running_mean`` and
``running_var``. The monitor sees each serving batch inside the forward pass (``Predictor.observer``) and
reads the normalized activation back from each BN slot's output, which works as well when the BN is
folded into the preceding Linear/Conv::

    n = (y - bias) / weight        # = (z - running_mean) / sqrt(running_var + eps)
    u = (x - mean) / std           # the input features, against the input standardization

The window holds what each recent row brought to every channel (``RowWindow``: the last N rows exactly;
``DecayWindow``: every row, weighted by an exponential half-life); for a conv channel that is the row's
sum and root sum of squares over H*W, so its statistics are over N*H*W, as BN computes them. Per channel,
with m and v the window's mean and variance in the layer's own units (the BN's input z, the raw feature):

    shift      = (m - running_mean) / sqrt(running_var + eps)      # in training standard deviations
    var_ratio  = (v + eps) / (running_var + eps)                   # 1: the same spread as in training
    shift_gap  = max(|shift| - 2 se(shift), 0)
    spread_gap = distance from sqrt(running_var) to [sqrt(v - 2 se(v)), sqrt(v + 2 se(v))],
                 divided by sqrt(running_var + eps)
    score      = sqrt(shift_gap² + spread_gap²)

``score`` is the 2-Wasserstein distance between N(m, v) and the frozen N(running_mean, running_var), in
training standard deviations, after moving m and sqrt(v) towards the frozen values by two of their
standard errors, never past them. The errors come from the window itself (the spread of its rows, their
fourth moment), and are never taken smaller than rows drawn from the frozen Gaussian would give. Without
that margin a few hundred rows of a heavy-tailed or nearly constant feature, such as a pixel that is
almost always 0, read as drift. A 3-sigma shift scores about 3, a k-fold wider spread about k - 1, a
spread that collapsed at most 1 (plus any shift). A layer's score is its worst channel's; the overall
score is the worst of the layers and the input. The input uses mean and std² with eps = 0; a feature
that was constant in training (the manifest records std 1 for it) has a training variance of 0.

    monitor = DriftMonitor.for_artifact(artifact, RowWindow(2048), min_rows=200, threshold=1.5)
    predictor.observer = monitor     # begin(x), see(name, h) per BN slot, end(): every serving batch
    monitor.report()                 # the GET /drift answer
    monitor.reset()                  # POST /drift/reset: a new window

The monitor copies the frozen statistics once and only reads the network: the BN fingerprint never moves.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from models import Artifact
from models.bn import batchnorm_layers

log = logging.getLogger("bnserve")

INPUT = "input"  # the site name of the input features
Verdict = Literal["ok", "drift", "insufficient_data", "error"]


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


def input_site(artifact: Artifact) -> Site:
    """Gives back the input features as a site, against the manifest's input standardization."""
    std = artifact.manifest.input_standardization
    mean = np.asarray(std.mean, dtype=np.float64)
    sd = np.asarray(std.std, dtype=np.float64)
    constant = sd == 1.0  # the manifest's marker for a feature with zero variance in training
    return Site(
        name=INPUT,
        kind="input",
        channels=list(artifact.manifest.feature_names),
        ref_mean=mean,
        ref_var=np.where(constant, 0.0, sd * sd),
        eps=0.0,
        unit=sd,
        offset=mean,
        scale=sd,
        silent=np.zeros(len(sd), dtype=bool),
    )


def bn_site(name: str, bn: nn.modules.batchnorm._BatchNorm) -> Site:
    """Gives back one BN layer as a site; its buffers are copied, never written."""
    assert bn.running_mean is not None and bn.running_var is not None
    rm = bn.running_mean.detach().double().cpu().numpy().copy()
    rv = bn.running_var.detach().double().cpu().numpy().copy()
    c = len(rm)
    weight = bn.weight.detach().double().cpu().numpy().copy() if bn.affine else np.ones(c)
    bias = bn.bias.detach().double().cpu().numpy().copy() if bn.affine else np.zeros(c)
    silent = np.abs(weight) < 1e-12
    return Site(
        name=name,
        kind="2d" if isinstance(bn, nn.BatchNorm2d) else "1d",
        channels=[str(i) for i in range(c)],
        ref_mean=rm,
        ref_var=rv,
        eps=float(bn.eps),
        unit=np.sqrt(rv + bn.eps),
        offset=bias,
        scale=np.where(silent, 1.0, weight),
        silent=silent,
    )


# ---------------------------------------------------------------------------------------------- windows

# The hot path keeps, by reference, what each batch brings: the input rows, each 1d BN slot's output, and
# for a conv BN slot each row's sum and root sum of squares of y over H*W. The moments of n are computed
# later (rows window: on read; decay window: as batches come through, small ones 256 rows at a time): per
# row and channel, its mean m, its mean square q, and m², q², q*m for the standard errors.
MOMENTS = 5
Z = 2.0  # standard errors the score gives the window before it counts a difference as drift
N_LIMIT = 1e9  # |n| is clipped here so that n**4 stays finite in float32 even for absurd inputs

Reduce = Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # raw rows, weights -> (MOMENTS, C) sums


@dataclass
class Block:
    """One batch's raw values as the forward pass made them: ``parts`` side by side are its (rows, C_raw)
    raw columns. Kept by reference and never written: the serving network has no in-place layers, so the
    activations stay as they were seen. Copying them into a ring instead added 0.96 ms to a 1,024-row
    forward, keeping them adds 0.08 ms (docs/PERFORMANCE.md)."""

    rows: int
    parts: list[torch.Tensor]  # each (rows, width) on the serving device, in raw-column order
    sums: np.ndarray | None = None  # decay window: the block's weighted moment sums, once prepared

    def numpy(self, first: int = 0) -> np.ndarray:
        """Gives back rows ``first:`` as one float32 array (rows - first, C_raw), for reading only."""
        parts = [p[first:].cpu().numpy() for p in self.parts]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


@dataclass
class Snapshot:
    """A window's content at one instant, taken under the monitor's lock and summed outside it."""

    raw: np.ndarray  # (k, C_raw) float32 rows not summed yet
    weights: np.ndarray | None  # (k,) their weights; None: 1 each
    sums: np.ndarray | None  # (MOMENTS, C) float64 moments summed already (decay), decayed to now
    weight: float  # the total weight
    rows: float  # the effective row count (Kish): weight² / sum of squared weights


class Window(Protocol):
    """Recent rows, fed one block per batch. ``add``, ``snapshot`` and ``clear`` run under the monitor's
    lock and only do bookkeeping or copies; ``prepare`` runs before, outside it."""

    def bind(self, columns: int, reduce: Reduce) -> None: ...
    def prepare(self, block: Block) -> None: ...
    def add(self, block: Block) -> None: ...
    def snapshot(self) -> Snapshot: ...
    def clear(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


class RowWindow:
    """The last ``size`` rows exactly: the newest blocks, of which the oldest may be partly out already."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"the window must hold at least 1 row, got {size}")
        self.size = size
        self._columns = 0
        self._blocks: deque[Block] = deque()
        self._first = 0  # rows of the oldest block that have left the window
        self._rows = 0  # rows in the window

    def bind(self, columns: int, reduce: Reduce) -> None:
        self._columns = columns
        self.clear()

    def prepare(self, block: Block) -> None:
        pass  # summed on read

    def add(self, block: Block) -> None:
        self._blocks.append(block)
        self._rows += block.rows
        while self._rows > self.size:  # the oldest rows leave
            left = self._blocks[0].rows - self._first
            if self._rows - left >= self.size:
                self._blocks.popleft()
                self._rows -= left
                self._first = 0
            else:
                self._first += self._rows - self.size
                self._rows = self.size

    def snapshot(self) -> Snapshot:
        parts = [b.numpy(self._first if i == 0 else 0) for i, b in enumerate(self._blocks)]
        raw = np.concatenate(parts) if parts else np.zeros((0, self._columns), dtype=np.float32)  # a copy
        return Snapshot(raw, None, None, float(self._rows), float(self._rows))

    def clear(self) -> None:
        self._blocks.clear()
        self._first = self._rows = 0

    def describe(self) -> dict[str, Any]:
        return {"mode": "rows", "size": self.size}


class DecayWindow:
    """Every row so far, weighted ``2 ** (-age / half_life)``, age counting the rows that came after it.

    A large block is summed into the decayed moments at once (its sums prepared outside the lock); small
    ones gather in a pending block first, summed when it fills (or on read), since summing a handful of
    rows costs as much as summing hundreds.
    """

    PENDING = 256  # rows

    def __init__(self, half_life: float) -> None:
        if not half_life > 0:
            raise ValueError(f"the half-life must be a positive number of rows, got {half_life}")
        self.half_life = half_life
        self.decay = 0.5 ** (1.0 / half_life)  # per row
        self._reduce: Reduce | None = None
        self._weights: dict[int, np.ndarray] = {}
        self._pending = np.zeros((self.PENDING, 0), dtype=np.float32)
        self._pending_rows = 0
        self._sums: np.ndarray | None = None  # decayed moment sums of the rows summed so far
        self._weight = 0.0
        self._weight_sq = 0.0

    def bind(self, columns: int, reduce: Reduce) -> None:
        self._reduce = reduce
        self._pending = np.zeros((self.PENDING, columns), dtype=np.float32)
        self.clear()

    def prepare(self, block: Block) -> None:
        if block.rows >= self.PENDING:
            assert self._reduce is not None
            block.sums = self._reduce(block.numpy(), self._row_weights(block.rows))

    def add(self, block: Block) -> None:
        if block.sums is not None or self._pending_rows + block.rows > self.PENDING:
            self._add_pending()
        if block.sums is not None:
            self._add(block.sums, block.rows)
        else:
            k = self._pending_rows
            self._pending[k : k + block.rows] = block.numpy()
            self._pending_rows += block.rows

    def _add_pending(self) -> None:
        k = self._pending_rows
        if k:
            assert self._reduce is not None
            self._add(self._reduce(self._pending[:k], self._row_weights(k)), k)
            self._pending_rows = 0

    def _add(self, sums: np.ndarray, rows: int) -> None:
        """Decays what was summed by ``rows`` rows and adds the sums of those rows (weights newest last)."""
        w, old = self._row_weights(rows), self.decay**rows
        self._sums = sums if self._sums is None else self._sums * old + sums
        self._weight = self._weight * old + float(w.sum())
        self._weight_sq = self._weight_sq * old * old + float(w @ w)

    def _row_weights(self, k: int) -> np.ndarray:
        w = self._weights.get(k)
        if w is None:
            w = np.power(self.decay, np.arange(k - 1, -1, -1, dtype=np.float64))  # (k,): newest row last
            if len(self._weights) < 64:
                self._weights[k] = w
        return w

    def snapshot(self) -> Snapshot:
        k = self._pending_rows
        w, old = self._row_weights(k), self.decay**k
        weight = self._weight * old + float(w.sum())
        weight_sq = self._weight_sq * old * old + float(w @ w)
        rows = weight**2 / weight_sq if weight_sq > 0 else 0.0
        sums = None if self._sums is None else self._sums * old
        return Snapshot(self._pending[:k].copy(), w, sums, weight, rows)

    def clear(self) -> None:
        self._pending_rows = 0
        self._sums = None
        self._weight = self._weight_sq = 0.0

    def describe(self) -> dict[str, Any]:
        return {"mode": "decay", "half_life_rows": self.half_life}


# ---------------------------------------------------------------------------------------------- comparison


@dataclass
class SiteDrift:
    """One site's window statistics and their comparison with the frozen ones, per channel."""

    site: Site
    rows: float  # effective row count
    mean: np.ndarray  # (C,) window mean, in the layer's own units (BN input z, raw feature)
    var: np.ndarray  # (C,) window variance (population, ddof 0)
    shift: np.ndarray
    var_ratio: np.ndarray  # NaN for an input feature constant in training
    score: np.ndarray

    @classmethod
    def compare(cls, site: Site, weight: float, rows: float, sums: np.ndarray) -> SiteDrift:
        """Gives back the comparison from the window's sums ``(MOMENTS, C)`` of the row moments of n."""
        s_m, s_q, s_mm, s_qq, s_qm = sums / weight
        mean_n = s_m
        var_n = np.maximum(s_q - mean_n**2, 0.0)
        unit = site.unit
        var = var_n * unit * unit
        ref_sd = np.sqrt(site.ref_var) / unit  # the frozen spread in normalized units (1 but for eps)
        # Standard errors: of the mean from the spread of the row means; of the variance by the delta method
        # on (E[q], E[m]), whose per-row influence is q - 2 * mean * m. Never below what rows drawn from the
        # frozen Gaussian would give: a window without the rare values of a feature is not exact.
        se_mean = np.sqrt(np.maximum(s_mm - mean_n**2, ref_sd**2) / rows)
        influence_var = s_qq - 4 * mean_n * s_qm + 4 * mean_n**2 * s_mm - (s_q - 2 * mean_n**2) ** 2
        se_var = np.sqrt(np.maximum(influence_var, 2 * ref_sd**4) / rows)
        sd_low, sd_high = np.sqrt(np.maximum(var_n - Z * se_var, 0.0)), np.sqrt(var_n + Z * se_var)
        shift_gap = np.maximum(np.abs(mean_n) - Z * se_mean, 0.0)
        spread_gap = np.maximum(np.maximum(sd_low - ref_sd, ref_sd - sd_high), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ref_spread = site.ref_var + site.eps
            var_ratio = np.where(ref_spread > 0, (var + site.eps) / ref_spread, np.nan)
        silent = site.silent
        return cls(
            site,
            rows,
            site.ref_mean + mean_n * unit,
            var,
            np.where(silent, 0.0, mean_n),
            np.where(silent, 1.0, var_ratio),
            np.where(silent, 0.0, np.hypot(shift_gap, spread_gap)),
        )

    @property
    def worst(self) -> float:
        return float(self.score.max()) if len(self.score) else 0.0

    def summary(self, *, top: int) -> dict[str, Any]:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = np.abs(
                np.log(np.clip(self.var_ratio, 1e-6, 1e6))
            )  # clipped: an empty spread stays finite
        known = log_ratio[~np.isnan(log_ratio)]
        order = np.argsort(-self.score, kind="stable")[:top]
        return {
            "name": self.site.name,
            "kind": self.site.kind,
            "channels": self.site.num_channels,
            "rows": _rows(self.rows),
            "score": self.worst,
            "rms_shift": float(np.sqrt(np.mean(self.shift**2))),
            "max_abs_shift": float(np.abs(self.shift).max()),
            "mean_abs_log_var_ratio": float(known.mean()) if len(known) else None,
            "worst_channels": [self.channel(int(i)) for i in order],
        }

    def channel(self, i: int) -> dict[str, Any]:
        name: dict[str, Any] = (
            {"feature": self.site.channels[i]} if self.site.kind == INPUT else {"channel": i}
        )
        return name | {
            "score": float(self.score[i]),
            "shift": float(self.shift[i]),
            "var_ratio": _finite(self.var_ratio[i]),
            "mean": float(self.mean[i]),
            "var": float(self.var[i]),
            "frozen_mean": float(self.site.ref_mean[i]),
            "frozen_var": float(self.site.ref_var[i]),
        }


# ---------------------------------------------------------------------------------------------- monitor


class DriftMonitor:
    """Streams live traffic at every site into a window and compares it with the frozen statistics.

    ``begin``, ``Batch.see`` and ``Batch.end`` run inside the forward pass, on the event loop or in the
    batcher's worker thread (both at once, for a small and a large batch): they keep references to the
    values and hand the batch to the window as one block at its end; readers run on other threads, copy
    the window under the lock and do the arithmetic outside it.
    """

    def __init__(
        self,
        sites: list[Site],
        window: Window,
        *,
        min_rows: int,
        threshold: float,
    ) -> None:
        if sites[0].kind != INPUT:
            raise ValueError("the first site must be the input features")
        self.sites = sites
        self.window = window
        self.min_rows = min_rows
        self.threshold = threshold
        # Raw columns: the input and the 1d layers (one value per channel), then for each 2d layer the rows'
        # sums of y over H*W, then their root sums of squares. The summed columns keep the same site order.
        flat = [s for s in sites if s.kind != "2d"]
        self._flat_width = sum(s.num_channels for s in flat)
        self._spatial = [s for s in sites if s.kind == "2d"]
        self._columns: dict[str, slice] = {}
        start = 0
        for s in flat + self._spatial:
            self._columns[s.name] = slice(start, start + s.num_channels)
            start += s.num_channels
        self._num_channels = start
        self._offset = np.concatenate([s.offset for s in flat + self._spatial])
        self._inv_scale = 1.0 / np.concatenate([s.scale for s in flat + self._spatial])
        self._offset32 = self._offset.astype(np.float32)
        self._inv_scale32 = self._inv_scale.astype(np.float32)
        self._raw_columns = {s.name: self._columns[s.name].start for s in flat}
        at = self._flat_width
        for s in self._spatial:
            self._raw_columns[s.name] = at
            at += 2 * s.num_channels
        self._raw_width = at
        self._kinds = {s.name: (s.kind, s.num_channels) for s in sites}
        self._positions: dict[str, int] = {}  # H*W of each 2d layer, from its first batch
        self._staged: list[torch.Tensor] = []  # small batches' rows (k, C_raw), not in the window yet
        self._staged_rows = 0
        self.window.bind(self._raw_width, self._moment_sums)
        self._lock = threading.Lock()
        self._rows_committed = 0
        self.since = _now()
        self.error: str | None = None

    @classmethod
    def for_artifact(
        cls,
        artifact: Artifact,
        window: Window,
        *,
        min_rows: int,
        threshold: float,
    ) -> DriftMonitor:
        """Gives back a monitor of the artifact's input and every BN layer, read from the unfolded network."""
        if inplace := [name for name, m in artifact.model.named_modules() if getattr(m, "inplace", False)]:
            # The monitor keeps activations by reference; an in-place layer would overwrite them.
            raise ValueError(f"the drift monitor needs a network without in-place layers, got {inplace}")
        sites = [input_site(artifact)] + [bn_site(name, bn) for name, bn in batchnorm_layers(artifact.model)]
        return cls(sites, window, min_rows=min_rows, threshold=threshold)

    # ------------------------------------------------------------------------------------------ hot path

    def begin(self, x: torch.Tensor) -> Batch | IgnoredBatch:
        """Starts watching one serving batch: its raw input rows ``x`` (B, F)."""
        return IGNORED if self.error is not None else Batch(self, x)

    def _add(self, block: Block) -> None:
        """Hands a large batch's block to the window, after the staged small batches that came before it."""
        try:
            self.window.prepare(block)  # outside the lock: a decay window sums a large block here
            with self._lock:
                if self.error is None:
                    self._flush_staged()
                    self.window.add(block)
                    self._rows_committed += block.rows
        except Exception as e:  # a monitor fault must never fail a prediction
            self._fail(e, None)

    def _raw_values(self, name: str, h: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """Gives back (first raw column, width, values (B, width)) of what the window keeps of BN slot
        ``name``'s output: a 1d layer's values; a 2d layer's per-row sums and root sums of squares over H*W."""
        col, (kind, c) = self._raw_columns[name], self._kinds[name]
        if kind == "1d":
            return [(col, c, h)]
        y = h.flatten(2)  # (B, C, H*W); torch.var_mean would be far slower on CPU
        if self._positions.setdefault(name, y.shape[2]) != y.shape[2]:
            raise ValueError(f"{name} had {self._positions[name]} positions per channel, now {y.shape[2]}")
        return [(col, c, y.sum(dim=2)), (col + c, c, torch.linalg.vector_norm(y, dim=2))]

    def _stage(self, rows: torch.Tensor) -> None:
        """Queues a small batch's rows (k, C_raw); they enter the window together, STAGE_ROWS at a time."""
        with self._lock:
            self._staged.append(rows)
            self._staged_rows += len(rows)
            if self._staged_rows >= Batch.STAGE_ROWS:
                self._flush_staged()

    def _flush_staged(self) -> None:
        """Moves the staged rows into the window as one block, oldest first (under the lock)."""
        if not self._staged:
            return
        rows = self._staged[0] if len(self._staged) == 1 else torch.cat(self._staged)
        self._staged, self._staged_rows = [], 0
        block = Block(len(rows), [rows])
        self.window.prepare(block)
        self.window.add(block)
        self._rows_committed += block.rows

    @property
    def rows_seen(self) -> int:
        """Rows the monitor took in since the last reset, staged ones included."""
        return self._rows_committed + self._staged_rows

    def _fail(self, e: Exception, tensor: torch.Tensor | None) -> None:
        shape = f" on a tensor of shape {tuple(tensor.shape)}" if tensor is not None else ""
        self.error = f"the drift monitor stopped{shape}: {type(e).__name__}: {e}"
        log.exception("%s; POST /drift/reset restarts it", self.error)

    # ------------------------------------------------------------------------------------------ readers

    def _moment_sums(self, raw: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """Gives back the (weighted) sums over rows ``raw`` (k, C_raw) of their moments of n, (MOMENTS, C).

        The 1d columns are computed in float32, in place (several times faster than float64 here), and
        summed in float64; the conv columns, a few per channel, in float64.
        """
        sums = np.empty((MOMENTS, self._num_channels))

        def total(a: np.ndarray) -> np.ndarray:
            if weights is None:
                return a.sum(axis=0, dtype=np.float64)
            return np.asarray(weights.astype(a.dtype, copy=False) @ a, dtype=np.float64)

        cols = slice(0, self._flat_width)
        n = raw[:, cols] - self._offset32[cols]
        n *= self._inv_scale32[cols]
        np.clip(n, -N_LIMIT, N_LIMIT, out=n)
        q = n * n
        s_m, s_q = total(n), total(q)
        n *= q  # n³
        q *= q  # n⁴
        sums[:, cols] = [s_m, s_q, s_q, total(q), total(n)]  # m, q, m², q², q*m with m = n, q = n²
        at = self._flat_width
        for site in self._spatial:
            cols, c = self._columns[site.name], site.num_channels
            positions = self._positions[site.name]
            mean_y = raw[:, at : at + c].astype(np.float64) / positions
            rms_y = raw[:, at + c : at + 2 * c].astype(np.float64) / math.sqrt(positions)
            offset, inv_scale = self._offset[cols], self._inv_scale[cols]
            m = np.clip((mean_y - offset) * inv_scale, -N_LIMIT, N_LIMIT)
            mm = m * m
            # The row's mean of n² over H*W, from its mean and root mean square of y; never below m².
            q = np.clip(
                (rms_y * rms_y - 2 * offset * mean_y + offset * offset) * inv_scale**2, mm, N_LIMIT**2
            )
            sums[:, cols] = [total(m), total(q), total(mm), total(q * q), total(q * m)]
            at += 2 * c
        return sums

    def reset(self) -> None:
        """Starts a new window (and restarts a monitor stopped by an error)."""
        with self._lock:
            self.window.clear()
            self._staged, self._staged_rows = [], 0
            self._rows_committed = 0
            self.since = _now()
            self.error = None

    def compare(self) -> tuple[float, list[SiteDrift]]:
        """Gives back the window's effective row count and every site's comparison (none without rows)."""
        with self._lock:
            self._flush_staged()
            snap = self.window.snapshot()
        if snap.weight <= 0:
            return 0.0, []
        sums = (
            self._moment_sums(snap.raw, snap.weights)
            if len(snap.raw)
            else np.zeros((MOMENTS, self._num_channels))
        )
        if snap.sums is not None:
            sums += snap.sums
        return snap.rows, [
            SiteDrift.compare(s, snap.weight, snap.rows, sums[:, self._columns[s.name]]) for s in self.sites
        ]

    def verdict(self, rows: float, score: float | None) -> Verdict:
        if self.error is not None:
            return "error"
        if rows < self.min_rows or score is None:
            return "insufficient_data"
        return "ok" if score <= self.threshold else "drift"  # NaN (the network made NaN) counts as drift

    def report(self, *, top: int = 5, features: bool = True) -> dict[str, Any]:
        """Gives back the GET /drift answer: the verdict, then the input and every BN layer."""
        rows, drifts = self.compare()
        score = max(d.worst for d in drifts) if drifts else None
        verdict = self.verdict(rows, score)
        answer: dict[str, Any] = {
            "enabled": True,
            "verdict": verdict,
            "alert": verdict == "drift",
            "score": score,
            "threshold": self.threshold,
            "rows": _rows(rows),
            "min_rows": self.min_rows,
            "rows_seen": self.rows_seen,
            "window": self.window.describe(),
            "since": self.since,
            "worst_layer": None,
            "worst_feature": None,
            "message": "",
            "input": None,
            "layers": [],
        }
        if drifts:
            inputs, layers = drifts[0], drifts[1:]
            feature = int(inputs.score.argmax())
            answer["worst_feature"] = {
                "name": inputs.site.channels[feature],
                "score": float(inputs.score[feature]),
            }
            if layers:
                worst = max(layers, key=lambda d: d.worst)
                answer["worst_layer"] = {"name": worst.site.name, "score": worst.worst}
            answer["input"] = inputs.summary(top=top) | (
                {"features": [inputs.channel(i) for i in range(inputs.site.num_channels)]} if features else {}
            )
            answer["layers"] = [d.summary(top=top) for d in layers]
        answer["message"] = self._message(answer)
        return answer

    def _message(self, a: dict[str, Any]) -> str:
        verdict = a["verdict"]
        if verdict == "error":
            return str(self.error)
        if verdict == "insufficient_data":
            return (
                f"insufficient data: {a['rows']} rows in the window, a verdict needs {self.min_rows} "
                "(BNSERVE_DRIFT_MIN_ROWS); this is not a 'no drift' answer"
            )
        worst = f"worst input feature {a['worst_feature']['name']!r} ({a['worst_feature']['score']:.3g})"
        if a["worst_layer"] is not None:
            worst += f", worst layer {a['worst_layer']['name']!r} ({a['worst_layer']['score']:.3g})"
        if verdict == "drift":
            return (
                f"drift: score {a['score']:.3g} > threshold {self.threshold:g} over {a['rows']} rows; {worst}"
            )
        return (
            f"no drift: score {a['score']:.3g} <= threshold {self.threshold:g} over {a['rows']} rows; {worst}"
        )

    def scores(self) -> dict[str, Any]:
        """Gives back the numbers the metrics publish: score per site and overall, verdict, window rows."""
        rows, drifts = self.compare()
        per_site = {d.site.name: d.worst for d in drifts}
        score = max(per_site.values()) if per_site else None
        return {"rows": rows, "sites": per_site, "score": score, "verdict": self.verdict(rows, score)}


class Batch:
    """One serving batch on its way into the window: ``see`` each BN slot's output, then ``end``.

    The values are kept by reference, as the forward made them, never copied. A batch of at most
    SMALL_ROWS rows is joined into one row block at ``end`` (a few KB) and staged: staged blocks enter the
    window STAGE_ROWS rows at a time (or on read), since per-op overhead, not bytes, is what a small batch
    costs. A larger one enters the window as its own block.
    """

    SMALL_ROWS = 64
    STAGE_ROWS = 256
    __slots__ = ("kept", "monitor", "rows")

    def __init__(self, monitor: DriftMonitor, x: torch.Tensor) -> None:
        self.monitor = monitor
        self.rows = len(x)
        self.kept: dict[int, torch.Tensor] = {0: x}  # first raw column -> (B, width)

    def see(self, name: str, h: torch.Tensor) -> None:
        """Takes what the window keeps of BN slot ``name``'s output (B, C) or (B, C, H, W)."""
        monitor = self.monitor
        if monitor.error is not None:
            return
        try:
            for col, width, values in monitor._raw_values(name, h):
                if tuple(values.shape) != (
                    self.rows,
                    width,
                ):  # a wrong width would shift every column after it
                    raise ValueError(f"expected a ({self.rows}, {width}) tensor, got {tuple(values.shape)}")
                self.kept[col] = values
        except Exception as e:  # a monitor fault must never fail a prediction
            monitor._fail(e, h)

    def end(self) -> None:
        """Hands the batch's values to the window."""
        monitor = self.monitor
        if monitor.error is not None:
            return
        try:
            parts = [self.kept[col] for col in sorted(self.kept)]
            if (width := sum(p.shape[1] for p in parts)) != monitor._raw_width:
                raise ValueError(f"expected {monitor._raw_width} values per row, got {width}")
            if self.rows > self.SMALL_ROWS:
                monitor._add(Block(self.rows, parts))
            else:
                monitor._stage(torch.cat(parts, dim=1))
        except Exception as e:
            monitor._fail(e, None)


class IgnoredBatch:
    """What ``begin`` gives back while the monitor is stopped: sees nothing."""

    def see(self, name: str, h: torch.Tensor) -> None:
        pass

    def end(self) -> None:
        pass


IGNORED = IgnoredBatch()


def _rows(rows: float) -> int | float:
    return int(rows) if float(rows).is_integer() else round(rows, 3)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def make_window(mode: str, *, rows: int, half_life: float) -> Window:
    """Gives back the window ``mode`` names: ``rows`` (the last ``rows`` rows) or ``decay``."""
    if mode == "rows":
        return RowWindow(rows)
    if mode == "decay":
        return DecayWindow(half_life)
    raise ValueError(f"the drift window mode must be one of ['rows', 'decay'], got {mode!r}")
