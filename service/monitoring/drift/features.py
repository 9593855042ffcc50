"""Drift of a table's raw features, for artifacts with preprocessing: each categorical and boolean feature's
category frequencies against the training frequencies, and every feature's missing rate against training's.

The frequencies are compared with the population stability index over the feature's bins (categorical: each
category, ``<other>`` for pooled and unseen categories, ``<missing>``; boolean: false, true, missing), shares
floored at ``PSI_FLOOR`` so that a bin empty on one side counts instead of dividing by zero::

    psi = sum over bins of (live - training) * ln(live / training)

The usual reading, and the thresholds used here: below 0.1 no shift, 0.1 to 0.25 a moderate one, above
``PSI_THRESHOLD`` = 0.25 drift. A missing rate drifts when it differs from training's by more than
``MISSING_RATE_GAP`` (0.1, absolute). Nothing is judged before ``min_rows`` rows.

The window holds the last ``rows`` rows by whole requests: a request's counts leave it together, so the
window holds between ``rows`` and ``rows`` + one request's rows. The training shares come from the artifact
(``preprocessing``), never from traffic.

    monitor = FeatureDrift(feature_names, preprocessing, rows=2048, min_rows=200)
    monitor.add(numbers, codes)     # the columnar raw rows of one request (models.preprocessing)
    monitor.report()                # the "features" part of GET /drift
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.preprocessing import ABSENT, UNSEEN, BooleanFeature, CategoricalFeature, Preprocessing

PSI_THRESHOLD = 0.25
PSI_FLOOR = 1e-4
MISSING_RATE_GAP = 0.1


class FeatureDrift:
    def __init__(self, feature_names: Sequence[str], pre: Preprocessing, *, rows: int, min_rows: int) -> None:
        self.feature_names = list(feature_names)
        self.preprocessing = pre
        self.rows, self.min_rows = rows, min_rows
        self._bins: list[list[str]] = []  # per feature: bin labels, the missing bin last
        training: list[float] = []
        self._offsets: list[int] = []
        for f in pre.features:
            self._offsets.append(len(training))
            if isinstance(f, CategoricalFeature):
                labels = [*f.categories, "<other>", "<missing>"]
                training += [*f.frequencies, f.other_rate, f.missing_rate]
            elif isinstance(f, BooleanFeature):
                labels = ["false", "true", "<missing>"]
                training += [1 - f.true_rate - f.missing_rate, f.true_rate, f.missing_rate]
            else:
                labels = ["<present>", "<missing>"]
                training += [1 - f.missing_rate, f.missing_rate]
            self._bins.append(labels)
        self._training = np.clip(np.array(training), 0.0, 1.0)
        self._numeric = [j for j, f in enumerate(pre.features) if not isinstance(f, CategoricalFeature)]
        self._categorical = [j for j, f in enumerate(pre.features) if isinstance(f, CategoricalFeature)]
        self._lock = threading.Lock()
        self._window: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        self._in_window = 0

    def add(self, numbers: np.ndarray, codes: np.ndarray) -> None:
        """Keeps one request's raw columns (by reference, never written) in the window; counted on read,
        so that a one-row request pays an append, not a count (28 µs)."""
        b = len(numbers) if len(self._numeric) else len(codes)
        with self._lock:
            self._window.append((b, numbers, codes))
            self._in_window += b
            while len(self._window) > 1 and self._in_window - self._window[0][0] >= self.rows:
                self._in_window -= self._window.popleft()[0]

    def _count(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Gives back the rows of each bin of every feature, for raw columns of ``len(numbers)`` rows."""
        counts = np.zeros(len(self._training))
        b = len(numbers) if len(self._numeric) else len(codes)
        for k, j in enumerate(self._numeric):
            v, at = numbers[:, k], self._offsets[j]
            missing = int(np.isnan(v).sum())
            if len(self._bins[j]) == 3:  # boolean: false, true, missing
                counts[at] += int((v == 0).sum())
                counts[at + 1] += int((v == 1).sum())
                counts[at + 2] += missing
            else:
                counts[at] += b - missing
                counts[at + 1] += missing
        for k, j in enumerate(self._categorical):
            c = codes[:, k]
            size = len(self._bins[j])
            bins = np.where(c >= 0, c, np.where(c == UNSEEN, size - 2, size - 1))
            assert ABSENT == -2  # the last bin
            counts[self._offsets[j] : self._offsets[j] + size] += np.bincount(bins, minlength=size)
        return counts

    def reset(self) -> None:
        with self._lock:
            self._window.clear()
            self._in_window = 0

    def report(self) -> dict[str, Any]:
        """Gives back every feature's live shares against training's, its PSI and missing rates, a verdict."""
        with self._lock:
            window, rows = list(self._window), self._in_window
        if window:
            counts = self._count(
                np.concatenate([n for _, n, _ in window]), np.concatenate([c for _, _, c in window])
            )
        else:
            counts = np.zeros(len(self._training))
        features = []
        for j, (name, f) in enumerate(zip(self.feature_names, self.preprocessing.features, strict=True)):
            at, size = self._offsets[j], len(self._bins[j])
            train = self._training[at : at + size]
            live = counts[at : at + size] / rows if rows else np.zeros(size)
            entry: dict[str, Any] = {
                "name": name,
                "kind": f.kind,
                "missing_rate": float(live[-1]) if rows else None,
                "training_missing_rate": float(train[-1]),
                "psi": None,
                "psi_threshold": None,
            }
            drift = rows > 0 and abs(float(live[-1]) - float(train[-1])) > MISSING_RATE_GAP
            if not isinstance(f, CategoricalFeature | BooleanFeature):
                entry["frequencies"] = None
            else:
                psi = population_stability(live, train) if rows else None
                entry["psi"], entry["psi_threshold"] = psi, PSI_THRESHOLD
                entry["frequencies"] = {
                    label: {"live": float(p) if rows else None, "training": float(q)}
                    for label, p, q in zip(self._bins[j], live, train, strict=True)
                }
                drift = drift or (psi is not None and psi > PSI_THRESHOLD)
            entry["verdict"] = "insufficient_data" if rows < self.min_rows else "drift" if drift else "ok"
            features.append(entry)
        verdicts = {e["verdict"] for e in features}
        verdict = "insufficient_data" if rows < self.min_rows else "drift" if "drift" in verdicts else "ok"
        return {
            "verdict": verdict,
            "rows": rows,
            "min_rows": self.min_rows,
            "psi_threshold": PSI_THRESHOLD,
            "missing_rate_gap": MISSING_RATE_GAP,
            "features": features,
        }


def population_stability(live: np.ndarray, training: np.ndarray) -> float:
    """Gives back the PSI of the shares ``live`` against ``training``, both floored at ``PSI_FLOOR``."""
    p, q = np.maximum(live, PSI_FLOOR), np.maximum(training, PSI_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))
