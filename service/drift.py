"""The drift monitor: live traffic at every BN layer, and at the input, against the frozen statistics.

Every BN layer carries the training distribution at its depth: per channel, ``running_mean`` and
``running_var``. The monitor sees each serving batch inside the forward pass (``Predictor.observer``) and
reads the normalized activation back from each BN slot's output, which works as well when the BN is
folded into the preceding Linear/Conv::

    n = (y - bias) / weight        # = (z - running_mean) / sqrt(running_var + eps)
    u = (x - mean) / std           # the input features, against the input standardization

It keeps per-channel sums of each row's moments over a window of recent rows (``RowWindow``: the last N
rows exactly; ``DecayWindow``: every row, weighted by an exponential half-life). A conv channel's row
moments are over H*W, so its statistics are over N*H*W, as BN computes them. Per channel, with m and v
the window's mean and variance in the layer's own units (the BN's input z, the raw feature):

    shift     = (m - running_mean) / sqrt(running_var + eps)        # in training standard deviations
    var_ratio = (v + eps) / (running_var + eps)                     # 1: the same spread as in training
    score     = hypot(|shift| - 2 se(shift), (sqrt(v) - sqrt(running_var)) / sqrt(running_var + eps) ∓ 2 se)

``score`` is the 2-Wasserstein distance between N(m, v) and the frozen N(running_mean, running_var), in
training standard deviations, after moving m and sqrt(v) towards the frozen values by two of their own
standard errors, never past them (the errors come from the window itself: between-row spread, fourth
moment). Without that margin a few hundred rows of a heavy-tailed or nearly constant feature, such as a
pixel that is almost always 0, read as drift. A 3-sigma shift scores about 3, a k-fold wider spread about
k - 1, a spread that collapsed at most 1 (plus any shift). A layer's score is its worst channel's; the
overall score is the worst of the layers and the input. The input uses mean and std² with eps = 0; a
feature that was constant in training (the manifest records std 1 for it) has a training variance of 0.

    monitor = DriftMonitor.for_artifact(artifact, RowWindow(2048), min_rows=200, threshold=1.5, device="cpu")
    predictor.observer = monitor     # observe(x, bn_outputs) runs on every serving batch
    monitor.report()                 # the GET /drift answer
    monitor.reset()                  # POST /drift/reset: a new window

The monitor copies the frozen statistics once and only reads the network: the BN fingerprint never moves.
"""

from __future__ import annotations

import logging
import math
import threading
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

# The hot path only copies each row's raw values into a ring (the input row, each 1d BN slot's output, and
# for a conv BN slot the row's sum and root sum of squares of y over H*W). The moments of n are computed on
# read (decay: when the staged rows are folded in): per row and channel, its mean m, its mean square q,
# and m², q², q*m for the standard errors.
MOMENTS = 5
Z = 2.0  # standard errors the score gives the window before it counts a difference as drift
N_LIMIT = 1e9  # |n| is clipped here so that n**4 stays finite in float32 even for absurd inputs

Reduce = Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # raw rows, weights -> (MOMENTS, C) sums


@dataclass
class Snapshot:
    """A window's content at one instant, copied under the monitor's lock and summed outside it."""

    raw: np.ndarray  # (k, C_raw) float32 rows not summed yet, oldest first
    weights: np.ndarray | None  # (k,) their weights; None: 1 each
    sums: np.ndarray | None  # (MOMENTS, C) float64 moments summed earlier (decay), already decayed
    weight: float  # the total weight, raw rows included
    rows: float  # the effective row count (Kish): weight² / sum of squared weights


class Window(Protocol):
    """Recent rows: ``add`` and ``snapshot`` run under the monitor's lock and only copy."""

    def bind(self, columns: int, device: torch.device | str, reduce: Reduce) -> None: ...
    def add(self, parts: list[torch.Tensor]) -> None: ...
    def snapshot(self) -> Snapshot: ...
    def clear(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


class RowRing:
    """Raw rows in a (size, columns) float32 tensor on the serving device."""

    def __init__(self, size: int, columns: int, device: torch.device | str) -> None:
        self.size = size
        self.rows = torch.zeros((size, columns), dtype=torch.float32, device=device)

    def write(self, parts: list[torch.Tensor], start: int, stop: int, at: int) -> None:
        """Writes rows ``start:stop`` of the batch, its parts side by side, to ``at:at + stop - start``."""
        torch.cat([p[start:stop] for p in parts], dim=1, out=self.rows[at : at + stop - start])

    def copy(self, stop: int) -> np.ndarray:
        return self.rows[:stop].to("cpu", copy=True).numpy()


class RowWindow:
    """The last ``size`` rows exactly."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"the window must hold at least 1 row, got {size}")
        self.size = size
        self._ring: RowRing | None = None
        self._head = 0  # where the next row goes
        self._filled = 0

    def bind(self, columns: int, device: torch.device | str, reduce: Reduce) -> None:
        self._ring = RowRing(self.size, columns, device)
        self.clear()

    def add(self, parts: list[torch.Tensor]) -> None:
        assert self._ring is not None
        b = len(parts[0])
        if b >= self.size:  # only the newest rows fit
            self._ring.write(parts, b - self.size, b, 0)
            self._head, self._filled = 0, self.size
            return
        first = min(b, self.size - self._head)
        self._ring.write(parts, 0, first, self._head)
        if first < b:  # wraps around
            self._ring.write(parts, first, b, 0)
        self._head = (self._head + b) % self.size
        self._filled = min(self._filled + b, self.size)

    def snapshot(self) -> Snapshot:
        assert self._ring is not None
        n = self._filled  # before the first wrap the rows sit at [0, n); order does not matter here
        return Snapshot(self._ring.copy(n), None, None, float(n), float(n))

    def clear(self) -> None:
        self._head = self._filled = 0

    def describe(self) -> dict[str, Any]:
        return {"mode": "rows", "size": self.size}


class DecayWindow:
    """Every row so far, weighted ``2 ** (-age / half_life)``, age counting the rows that came after it.

    Rows are staged raw and folded into the decayed sums when ``staging`` rows have gathered.
    """

    def __init__(self, half_life: float, *, staging: int = 512) -> None:
        if not half_life > 0:
            raise ValueError(f"the half-life must be a positive number of rows, got {half_life}")
        self.half_life = half_life
        self.decay = 0.5 ** (1.0 / half_life)  # per row
        self.staging = staging
        self._ring: RowRing | None = None
        self._reduce: Reduce | None = None
        self._staged = 0
        self._sums = np.zeros((MOMENTS, 0))
        self._weight = 0.0
        self._weight_sq = 0.0

    def bind(self, columns: int, device: torch.device | str, reduce: Reduce) -> None:
        self._ring = RowRing(self.staging, columns, device)
        self._reduce = reduce
        self._sums = np.zeros((MOMENTS, 0))
        self.clear()

    def add(self, parts: list[torch.Tensor]) -> None:
        assert self._ring is not None
        b, done = len(parts[0]), 0
        while done < b:
            take = min(b - done, self.staging - self._staged)
            self._ring.write(parts, done, done + take, self._staged)
            self._staged += take
            done += take
            if self._staged == self.staging:
                self._fold()

    def _fold(self) -> None:
        assert self._ring is not None and self._reduce is not None
        k, w = self._staged, self._row_weights(self._staged)
        summed = self._reduce(self._ring.copy(k), w)
        self._sums = summed if self._weight == 0 else self._sums * self.decay**k + summed
        self._weight = self._weight * self.decay**k + float(w.sum())
        self._weight_sq = self._weight_sq * self.decay ** (2 * k) + float(w @ w)
        self._staged = 0

    def _row_weights(self, k: int) -> np.ndarray:
        return np.power(self.decay, np.arange(k - 1, -1, -1, dtype=np.float64))  # (k,): newest row last

    def snapshot(self) -> Snapshot:
        assert self._ring is not None
        k, w = self._staged, self._row_weights(self._staged)
        weight = self._weight * self.decay**k + float(w.sum())
        weight_sq = self._weight_sq * self.decay ** (2 * k) + float(w @ w)
        sums = self._sums * self.decay**k if self._weight > 0 else None
        return Snapshot(self._ring.copy(k), w, sums, weight, weight**2 / weight_sq if weight_sq > 0 else 0.0)

    def clear(self) -> None:
        self._staged = 0
        self._sums = np.zeros((MOMENTS, 0))
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

    ``observe`` runs inside the forward pass, possibly in the batcher's worker thread, and only copies rows
    into the window; readers run on other threads, copy the window and do the arithmetic outside the lock.
    """

    def __init__(
        self,
        sites: list[Site],
        window: Window,
        *,
        min_rows: int,
        threshold: float,
        device: torch.device | str = "cpu",
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
        self._flat_layers = [s.name for s in flat[1:]]
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
        self._raw_width = start + sum(s.num_channels for s in self._spatial)
        self._positions: dict[str, int] = {}  # H*W of each 2d layer, from its first batch
        self.window.bind(self._raw_width, device, self._moment_sums)
        self._lock = threading.Lock()
        self.rows_seen = 0
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
        device: torch.device | str,
    ) -> DriftMonitor:
        """Gives back a monitor of the artifact's input and every BN layer, read from the unfolded network."""
        sites = [input_site(artifact)] + [bn_site(name, bn) for name, bn in batchnorm_layers(artifact.model)]
        return cls(sites, window, min_rows=min_rows, threshold=threshold, device=device)

    # ------------------------------------------------------------------------------------------ hot path

    def observe(self, x: torch.Tensor, bn_outputs: dict[str, torch.Tensor]) -> None:
        """Adds one serving batch: raw input rows ``x`` (B, F) and every BN slot's output."""
        if self.error is not None:
            return
        try:
            parts = [x, *(bn_outputs[name] for name in self._flat_layers)]
            for site in self._spatial:
                y = bn_outputs[site.name].flatten(2)  # (B, C, H*W)
                if self._positions.setdefault(site.name, y.shape[2]) != y.shape[2]:
                    raise ValueError(
                        f"{site.name} had {self._positions[site.name]} positions, now {y.shape[2]}"
                    )
                # The row's sum and root sum of squares over H*W (torch.var_mean is far slower on CPU).
                parts += [y.sum(dim=2), torch.linalg.vector_norm(y, dim=2)]
            if (width := sum(p.shape[1] for p in parts)) != self._raw_width:
                raise ValueError(f"expected {self._raw_width} values per row, got {width}")
            with self._lock:
                self.window.add(parts)
                self.rows_seen += len(x)
        except Exception as e:  # a monitor fault must never fail a prediction
            self.error = (
                f"the drift monitor stopped on a batch of shape {tuple(x.shape)}: {type(e).__name__}: {e}"
            )
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
            self.rows_seen = 0
            self.since = _now()
            self.error = None

    def compare(self) -> tuple[float, list[SiteDrift]]:
        """Gives back the window's effective row count and every site's comparison (none without rows)."""
        with self._lock:
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
