"""Dynamic micro-batching: concurrent requests are merged into one forward pass.

Eval-mode BN is a per-row affine map, so a row's output does not depend on the rows it is batched with;
merging is therefore exact. Each caller gets back exactly its own rows, in order.

Policy: the first request to arrive while the model is idle is scheduled for the next turn of the event
loop (``max_wait_ms=0``) or after ``max_wait_ms``; every request parsed before then joins its batch, up to
``max_batch_rows``. While a batch runs, new requests queue and form the next batch. Small batches run on
the event loop (a hop to a thread costs more than the forward itself); large ones run in one worker thread
so the loop keeps accepting and parsing requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


class MicroBatcher:
    def __init__(
        self,
        forward: Forward,
        *,
        max_batch_rows: int = 512,
        max_wait_ms: float = 0.0,
        inline_rows: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.forward = forward  # (B, F) float32 -> (B, K) float32, no cross-row dependence
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_ms / 1000
        self.inline_rows = inline_rows
        self.on_batch = on_batch  # called with the row count of every forward pass (metrics)
        self._pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._pending_rows = 0
        self._scheduled: asyncio.Handle | None = None
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnserve-forward")

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Gives back the forward output for ``rows`` (B, F), computed in a batch with other callers' rows."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((rows, future))
        self._pending_rows += len(rows)
        if not self._busy:
            if self._pending_rows >= self.max_batch_rows:
                self._cancel_schedule()
                self._flush()
            elif self._scheduled is None:
                self._scheduled = (
                    loop.call_later(self.max_wait, self._flush) if self.max_wait > 0 else loop.call_soon(self._flush)
                )
        return await future

    def close(self) -> None:
        self._cancel_schedule()
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _cancel_schedule(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def _take_batch(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        # A single request larger than max_batch_rows still runs, alone: it was already accepted.
        batch, rows = [], 0
        while self._pending and (not batch or rows + len(self._pending[0][0]) <= self.max_batch_rows):
            item = self._pending.pop(0)
            if item[1].cancelled():  # the caller went away
                self._pending_rows -= len(item[0])
                continue
            batch.append(item)
            rows += len(item[0])
        self._pending_rows -= rows
        return batch

    def _flush(self) -> None:
        self._scheduled = None
        batch = self._take_batch()
        if not batch:
            return
        x = batch[0][0] if len(batch) == 1 else np.concatenate([rows for rows, _ in batch])
        if len(x) <= self.inline_rows:
            try:
                self._deliver(batch, self._run(x))
            finally:
                self._after_batch()
            return
        self._busy = True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._run, x)
        done.add_done_callback(lambda f: self._on_threaded_done(batch, f))

    def _run(self, x: np.ndarray) -> np.ndarray | BaseException:
        try:
            out = self.forward(x)
        except Exception as e:  # delivered to the callers of this batch only
            return e
        if self.on_batch is not None:
            self.on_batch(len(x))
        return out

    def _on_threaded_done(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], f: asyncio.Future) -> None:
        self._busy = False
        try:
            result = f.result()
        except BaseException as e:
            result = e
        try:
            self._deliver(batch, result)
        finally:
            self._after_batch()

    def _after_batch(self) -> None:
        if self._pending and not self._busy and self._scheduled is None:
            # Requests that queued during the forward form the next batch right away.
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    @staticmethod
    def _deliver(batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], out: np.ndarray | BaseException) -> None:
        start = 0
        for rows, future in batch:
            stop = start + len(rows)
            if not future.done():
                if isinstance(out, BaseException):
                    future.set_exception(out)
                else:
                    future.set_result(out[start:stop])
            start = stop
