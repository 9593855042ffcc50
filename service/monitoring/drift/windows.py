"""The drift window: what recent rows brought to every channel, fed one block per serving batch.

``RowWindow`` holds the last N rows exactly; ``DecayWindow`` every row, weighted by an exponential half-life.
The hot path keeps, by reference, what each batch brings: the input rows, each 1d BN slot's output, and for
a conv BN slot each row's sum and root sum of squares of y over H*W. The moments of n are computed later
(rows window: on read; decay window: as batches come through, small ones 256 rows at a time): per row and
channel, its mean m, its mean square q, and m², q², q*m for the standard errors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

MOMENTS = 5  # m, q, m², q², q*m per channel

Reduce = Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # raw rows, weights -> (MOMENTS, C) sums


@dataclass
class Block:
    """One batch's raw values as the forward pass made them: ``parts`` side by side are its (rows, C_raw)
    raw columns. Kept by reference and never written: the serving network has no in-place layers, so the
    activations stay as they were seen, and keeping a reference costs a small fraction of what copying
    them into a ring would (docs/PERFORMANCE.md)."""

    rows: int
    parts: list[np.ndarray | torch.Tensor]  # each (rows, width): numpy, or torch on the serving device
    sums: np.ndarray | None = None  # decay window: the block's weighted moment sums, once prepared

    def numpy(self, first: int = 0) -> np.ndarray:
        """Gives back rows ``first:`` as one float32 array (rows - first, C_raw), for reading only."""
        parts = [p[first:] if isinstance(p, np.ndarray) else p[first:].cpu().numpy() for p in self.parts]
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


def make_window(mode: str, *, rows: int, half_life: float) -> Window:
    """Gives back the window ``mode`` names: ``rows`` (the last ``rows`` rows) or ``decay``."""
    if mode == "rows":
        return RowWindow(rows)
    if mode == "decay":
        return DecayWindow(half_life)
    raise ValueError(f"the drift window mode must be one of ['rows', 'decay'], got {mode!r}")
