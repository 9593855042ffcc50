"""Per-channel statistics of the window and their comparison with the frozen ones: the drift score.

``SiteDrift.compare`` computes, per channel, the shift, the variance ratio and the score whose formulas and
reasons are in the package's docstring (service/monitoring/drift/__init__.py); ``Layout`` says where each
site's values sit and ``moment_sums`` sums a window's rows into the moments that comparison reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.monitoring.drift.sites import INPUT, Site
from service.monitoring.drift.windows import MOMENTS

Z = 2.0  # standard errors the score gives the window before it counts a difference as drift
N_LIMIT = 1e9  # |n| is clipped here so that n**4 stays finite in float32 even for absurd inputs


@dataclass(frozen=True)
class Layout:
    """Where each site's values sit: in a window row (raw columns) and in the summed moments (columns).

    Raw columns: the input and the 1d layers (one value per channel), then for each 2d layer the rows' sums
    of y over H*W, then their root sums of squares. The summed columns keep the same site order.
    """

    flat: list[Site]  # the input and the 1d layers
    spatial: list[Site]  # the 2d layers
    columns: dict[str, slice]  # each site's channels in the (MOMENTS, C) sums
    raw_columns: dict[str, int]  # each site's first raw column
    raw_width: int  # raw columns in all (C_raw)
    offset: np.ndarray  # (C,) n = (y - offset) * inv_scale, float64
    inv_scale: np.ndarray  # (C,)
    offset32: np.ndarray  # (C,) the same in float32, for the 1d columns
    inv_scale32: np.ndarray

    @classmethod
    def of(cls, sites: list[Site]) -> Layout:
        flat = [s for s in sites if s.kind != "2d"]
        spatial = [s for s in sites if s.kind == "2d"]
        ordered = flat + spatial
        bounds = np.cumsum([0] + [s.num_channels for s in ordered])
        columns = {
            s.name: slice(int(a), int(b)) for s, a, b in zip(ordered, bounds[:-1], bounds[1:], strict=True)
        }
        raw_columns = {s.name: columns[s.name].start for s in flat}
        at = int(bounds[len(flat)])
        for s in spatial:
            raw_columns[s.name] = at
            at += 2 * s.num_channels
        offset = np.concatenate([s.offset for s in ordered])
        inv_scale = 1.0 / np.concatenate([s.scale for s in ordered])
        return cls(
            flat, spatial, columns, raw_columns, at, offset, inv_scale,
            offset.astype(np.float32), inv_scale.astype(np.float32),
        )  # fmt: skip

    @property
    def flat_width(self) -> int:
        return sum(s.num_channels for s in self.flat)

    @property
    def num_channels(self) -> int:
        return len(self.offset)


def moment_sums(
    layout: Layout, positions: dict[str, int], raw: np.ndarray, weights: np.ndarray | None
) -> np.ndarray:
    """Gives back the (weighted) sums over rows ``raw`` (k, C_raw) of their moments of n, (MOMENTS, C).

    ``positions`` is each 2d layer's H*W. The 1d columns are computed in float32, in place (where numpy is
    several times faster than in float64), and summed in float64; the conv columns, a few per channel, in
    float64.
    """
    sums = np.empty((MOMENTS, layout.num_channels))

    def total(a: np.ndarray) -> np.ndarray:
        if weights is None:
            return a.sum(axis=0, dtype=np.float64)
        return np.asarray(weights.astype(a.dtype, copy=False) @ a, dtype=np.float64)

    flat_width = layout.flat_width
    cols = slice(0, flat_width)
    with np.errstate(over="ignore", invalid="ignore"):  # an absurd input overflows here; clipped next
        n = raw[:, cols] - layout.offset32[cols]
        n *= layout.inv_scale32[cols]
    np.clip(n, -N_LIMIT, N_LIMIT, out=n)
    q = n * n
    s_m, s_q = total(n), total(q)
    n *= q  # n³
    q *= q  # n⁴
    sums[:, cols] = [s_m, s_q, s_q, total(q), total(n)]  # m, q, m², q², q*m with m = n, q = n²
    at = flat_width
    for site in layout.spatial:
        cols, c = layout.columns[site.name], site.num_channels
        count = positions[site.name]
        mean_y = raw[:, at : at + c].astype(np.float64) / count
        rms_y = raw[:, at + c : at + 2 * c].astype(np.float64) / math.sqrt(count)
        offset, inv_scale = layout.offset[cols], layout.inv_scale[cols]
        m = np.clip((mean_y - offset) * inv_scale, -N_LIMIT, N_LIMIT)
        mm = m * m
        # The row's mean of n² over H*W, from its mean and root mean square of y; never below m².
        q = np.clip((rms_y * rms_y - 2 * offset * mean_y + offset * offset) * inv_scale**2, mm, N_LIMIT**2)
        sums[:, cols] = [total(m), total(q), total(mm), total(q * q), total(q * m)]
        at += 2 * c
    return sums


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
            "rows": rows_count(self.rows),
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


def rows_count(rows: float) -> int | float:
    """Gives back an effective row count as shown: whole for a rows window, 3 decimals for a decay one."""
    return int(rows) if float(rows).is_integer() else round(rows, 3)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
