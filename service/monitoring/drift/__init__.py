"""The drift monitor: live traffic at every BN layer, and at the input, against the frozen statistics.

Every BN layer carries the training distribution at its depth: per channel, ``running_mean`` and
``running_var``. The monitor sees each serving batch inside the forward pass (``TorchRuntime``'s observer) and
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

The package, by concern:

    sites.py    the input features and every BN layer, with their frozen statistics (Site)
    windows.py  the two windows (RowWindow, DecayWindow) and the blocks they hold
    stats.py    the per-channel statistics and the score (SiteDrift), the column layout, moment sums
    capture.py  capture on the forward path (Capture, Batch), locking
    report.py   the GET /drift answer and its message
    monitor.py  DriftMonitor, which puts them together; drift_monitor_for(settings)

The monitor copies the frozen statistics once and only reads the network: the BN fingerprint never moves.
"""

from __future__ import annotations

from service.monitoring.drift.monitor import DriftMonitor, MonitorFactory, drift_monitor_for
from service.monitoring.drift.report import Verdict
from service.monitoring.drift.sites import INPUT, Site
from service.monitoring.drift.stats import SiteDrift
from service.monitoring.drift.windows import DecayWindow, RowWindow, Window, make_window

__all__ = [
    "INPUT",
    "DecayWindow",
    "DriftMonitor",
    "MonitorFactory",
    "RowWindow",
    "Site",
    "SiteDrift",
    "Verdict",
    "Window",
    "drift_monitor_for",
    "make_window",
]
