"""PNG figures with matplotlib's Agg canvas, shared by the training report and the scaling experiment.

    fig, (left, right) = figure(ncols=2)
    band(left, epochs, runs, label="raw")        # mean over runs, shaded from the lowest to the highest
    Path("curves.png").write_bytes(png_bytes(fig))

Figures are made with ``matplotlib.figure.Figure`` rather than pyplot: no global state, no display needed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 110


def figure(
    *, ncols: int = 1, nrows: int = 1, width: float = 5.2, height: float = 3.6
) -> tuple[Figure, list[Axes]]:
    """Gives back a figure and its axes (a flat list), ``width`` x ``height`` inches per panel."""
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def band(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    runs: np.ndarray,
    *,
    label: str,
    color: str | None = None,
    geometric: bool = False,
) -> None:
    """Draws the mean of ``runs`` (R, T) over its R runs and shades from their minimum to their maximum;
    ``geometric`` takes the mean of the logarithms (for ratios on a log axis). NaN marks a missing epoch."""
    runs = np.asarray(runs, dtype=np.float64)
    with np.errstate(all="ignore"):
        centre = np.exp(np.nanmean(np.log(runs), axis=0)) if geometric else np.nanmean(runs, axis=0)
        low, high = np.nanmin(runs, axis=0), np.nanmax(runs, axis=0)
    (line,) = ax.plot(x, centre, label=label, color=color, linewidth=1.6)
    if len(runs) > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
