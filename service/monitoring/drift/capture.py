"""Capture on the forward path: each serving batch's values, kept by reference, handed to the window.

``Capture.begin``, ``Batch.see`` and ``Batch.end`` run inside the forward pass, on the event loop or in the
batcher's worker thread (both at once, for a small and a large batch): they keep references to the values
and hand the batch to the window as one block at its end. Readers take a ``snapshot`` under the same lock
and do the arithmetic outside it. A fault here stops the capture (``error``) and never fails a prediction.

The values are torch tensors from the torch runtime (on its device) or numpy arrays from the lean runtime;
either is kept as it comes, and this module imports torch only when it is handed a tensor.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np

from service.monitoring.drift.stats import Layout, moment_sums
from service.monitoring.drift.windows import Block, Snapshot, Window

if TYPE_CHECKING:
    import torch

    Array: TypeAlias = np.ndarray | torch.Tensor
else:
    Array = Any

log = logging.getLogger("bnserve")


class Capture:
    """The window's intake: large batches enter as their own block, small ones are staged and enter together."""

    SMALL_ROWS = 64  # a batch of at most this many rows is staged
    STAGE_ROWS = 256  # staged rows enter the window this many at a time (or on read)

    def __init__(self, layout: Layout, window: Window) -> None:
        self.layout = layout
        self.window = window
        self.positions: dict[str, int] = {}  # H*W of each 2d layer, from its first batch
        self.error: str | None = None
        self._kinds = {s.name: (s.kind, s.num_channels) for s in layout.flat + layout.spatial}
        # Small batches' rows not in the window yet: numpy rows are copied into one buffer as they come
        # (rows [0, _staged_rows)), torch rows kept in a list, in arrival order either way (one kind per
        # runtime, so never both at once).
        self._buffer: np.ndarray | None = None  # (STAGE_ROWS + SMALL_ROWS, C_raw) float32
        self._staged: list[Array] = []
        self._staged_rows = 0
        self._rows_committed = 0
        self._lock = threading.Lock()
        window.bind(layout.raw_width, self.moment_sums)

    def begin(self, x: Array) -> Batch | IgnoredBatch:
        """Starts watching one serving batch: its raw input rows ``x`` (B, F)."""
        return IGNORED if self.error is not None else Batch(self, x)

    def moment_sums(self, raw: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """Gives back the (weighted) moment sums (MOMENTS, C) of window rows ``raw`` (k, C_raw)."""
        return moment_sums(self.layout, self.positions, raw, weights)

    def raw_values(self, name: str, h: Array) -> list[tuple[int, int, Array]]:
        """Gives back (first raw column, width, values (B, width)) of what the window keeps of BN slot
        ``name``'s output: a 1d layer's values; a 2d layer's per-row sums and root sums of squares over H*W."""
        col, (kind, c) = self.layout.raw_columns[name], self._kinds[name]
        if kind == "1d":
            return [(col, c, h)]
        positions, sums, norms = _spatial_sums(h)
        if self.positions.setdefault(name, positions) != positions:
            raise ValueError(f"{name} had {self.positions[name]} positions per channel, now {positions}")
        return [(col, c, sums), (col + c, c, norms)]

    def take(self, rows: int, parts: list[Array]) -> None:
        """Takes one batch's raw columns ``parts`` (each (rows, width), in raw-column order)."""
        if (width := sum(p.shape[1] for p in parts)) != self.layout.raw_width:
            raise ValueError(f"expected {self.layout.raw_width} values per row, got {width}")
        if rows > self.SMALL_ROWS:
            self._add(Block(rows, parts))
        elif len(arrays := [p for p in parts if isinstance(p, np.ndarray)]) == len(parts):
            self._stage_numpy(rows, arrays)
        else:
            self._stage(_concat(parts, axis=1))

    def fail(self, e: Exception, tensor: Array | None) -> None:
        """Stops the capture, saying why; ``reset`` restarts it."""
        shape = f" on a tensor of shape {tuple(tensor.shape)}" if tensor is not None else ""
        self.error = f"the drift monitor stopped{shape}: {type(e).__name__}: {e}"
        log.exception("%s; POST /drift/reset restarts it", self.error)

    @property
    def rows_seen(self) -> int:
        """Rows taken in since the last reset, staged ones included."""
        return self._rows_committed + self._staged_rows

    def snapshot(self) -> Snapshot:
        """Gives back the window's content now, staged rows included."""
        with self._lock:
            self._flush_staged()
            return self.window.snapshot()

    def reset(self) -> None:
        """Empties the window (and restarts a capture stopped by an error)."""
        with self._lock:
            self.window.clear()
            self._staged, self._staged_rows, self._buffer = [], 0, None
            self._rows_committed = 0
            self.error = None

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
            self.fail(e, None)

    def _stage(self, rows: Array) -> None:
        """Queues a small batch's rows (k, C_raw); they enter the window together, STAGE_ROWS at a time."""
        with self._lock:
            self._staged.append(rows)
            self._staged_rows += len(rows)
            if self._staged_rows >= self.STAGE_ROWS:
                self._flush_staged()

    def _stage_numpy(self, rows: int, parts: list[np.ndarray]) -> None:
        """Copies a small batch's numpy columns into the staging buffer, side by side: no array of its own
        (joined, then joined again with the others at the flush) and no activations kept alive until then,
        which churned the allocator and the caches on every batch (docs/PERFORMANCE.md)."""
        with self._lock:
            buffer, k = self._buffer, self._staged_rows
            if buffer is None:
                buffer = self._buffer = np.empty(
                    (self.STAGE_ROWS + self.SMALL_ROWS, self.layout.raw_width), np.float32
                )
            col = 0
            for part in parts:
                width = part.shape[1]
                buffer[k : k + rows, col : col + width] = part
                col += width
            self._staged_rows = k + rows
            if self._staged_rows >= self.STAGE_ROWS:
                self._flush_staged()

    def _flush_staged(self) -> None:
        """Moves the staged rows into the window as one block, oldest first (under the lock)."""
        if self._buffer is not None and self._staged_rows:
            # The block keeps the buffer's rows; the next small batch starts a new buffer.
            rows: Array = self._buffer[: self._staged_rows]
            self._buffer = None
        elif self._staged:
            rows = self._staged[0] if len(self._staged) == 1 else _concat(self._staged, axis=0)
        else:
            return
        self._staged, self._staged_rows = [], 0
        block = Block(len(rows), [rows])
        self.window.prepare(block)
        self.window.add(block)
        self._rows_committed += block.rows


class Batch:
    """One serving batch on its way into the window: ``see`` each BN slot's output, then ``end``.

    The values are kept by reference, as the forward made them, never copied. A small batch is joined into
    one row block at ``end`` (a few KB) and staged, since per-op overhead, not bytes, is what a small batch
    costs; a larger one enters the window as its own block.
    """

    __slots__ = ("capture", "kept", "rows")

    def __init__(self, capture: Capture, x: Array) -> None:
        self.capture = capture
        self.rows = len(x)
        self.kept: dict[int, Array] = {0: x}  # first raw column -> (B, width)

    def see(self, name: str, h: Array) -> None:
        """Takes what the window keeps of BN slot ``name``'s output (B, C) or (B, C, H, W)."""
        capture = self.capture
        if capture.error is not None:
            return
        try:
            for col, width, values in capture.raw_values(name, h):
                if tuple(values.shape) != (
                    self.rows,
                    width,
                ):  # a wrong width would shift every column after it
                    raise ValueError(f"expected a ({self.rows}, {width}) tensor, got {tuple(values.shape)}")
                self.kept[col] = values
        except Exception as e:  # a monitor fault must never fail a prediction
            capture.fail(e, h)

    def end(self) -> None:
        """Hands the batch's values to the window."""
        capture = self.capture
        if capture.error is not None:
            return
        try:
            capture.take(self.rows, [self.kept[col] for col in sorted(self.kept)])
        except Exception as e:
            capture.fail(e, None)


class IgnoredBatch:
    """What ``begin`` gives back while the capture is stopped: sees nothing."""

    def see(self, name: str, h: Array) -> None:
        pass

    def end(self) -> None:
        pass


IGNORED = IgnoredBatch()


def _spatial_sums(h: Array) -> tuple[int, Array, Array]:
    """Gives back H*W and, per row and channel, the sum and the root sum of squares of ``h`` (B, C, H, W)
    over H*W: sums and norms, because a variance over H*W is far slower to compute on a CPU."""
    if isinstance(
        h, np.ndarray
    ):  # the lean runtime's channels-last activations seen as (B, C, H, W): no copy
        return h.shape[2] * h.shape[3], h.sum(axis=(2, 3)), np.sqrt(np.square(h).sum(axis=(2, 3)))
    import torch

    y = h.flatten(2)  # (B, C, H*W)
    return y.shape[2], y.sum(dim=2), torch.linalg.vector_norm(y, dim=2)


def _concat(parts: list[Array], *, axis: int) -> Array:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=axis)
    import torch

    return torch.cat(cast("list[torch.Tensor]", parts), dim=axis)
