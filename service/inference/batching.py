"""Dynamic micro-batching: concurrent requests are merged into one forward pass.

Eval-mode BN is a per-row affine map, so a row's output does not depend on the rows it is batched with;
merging is therefore exact. Each caller gets back exactly its own rows, in order.

Policy: the first request to arrive while the model is idle is scheduled for the next turn of the event
loop (``max_wait_ms=0``) or after ``max_wait_ms``; every request parsed before then joins its batch, up to
``max_batch_rows``. While a batch runs, new requests queue and form the next batch.

Small batches (at most ``inline_rows``) run on the event loop: a hop to a thread costs more than their
forward. Larger ones run in one worker thread, and while they do, requests of at most ``inline_rows`` rows
keep being served on the loop, so a large request never holds up small ones; large requests wait for the
thread, in order. With ``inline_ms`` a large batch runs on the loop too, while no small request has come
in for ``QUIET_S`` and its forward is expected to take at most ``inline_ms`` (from the wall time per row of
the last large forwards): on a load of large requests alone the hop to the thread and back (about three
context switches per request) cost 3 to 15% of the requests per second in alternating runs
(docs/PERFORMANCE.md), and there is no small request to keep answered. The first small request to come
in then waits for at most one such forward, and the large ones go back to the thread for as long as small
ones keep coming.

Failures stay with their caller: when a merged forward raises, each request of the batch is run again on
its own, so only the request that fails gets the exception. A caller that goes away (its task cancelled)
is dropped from its batch and never blocks or breaks the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar, overload

import numpy as np

log = logging.getLogger("bnserve")

Forward = Callable[[np.ndarray], np.ndarray]
QUIET_S = 1.0  # with inline_ms: how long after the last small request large batches may run on the loop
Outcome = np.ndarray | BaseException


class Waiter(Protocol):
    """What waits for a request's rows: an asyncio future, or anything that takes the same four calls (the
    protocol fast path's reply, service/http/protocol.py). Its calls always come on the loop's thread."""

    def done(self) -> bool: ...  # True: the caller went away, it is dropped from its batch
    def set_result(self, result: np.ndarray, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...
    def cancel(self) -> bool: ...  # the batcher was closed with the request queued


W = TypeVar("W", bound=Waiter)
Request = tuple[np.ndarray, Waiter]


class MicroBatcher:
    def __init__(
        self,
        forward: Forward,
        *,
        max_batch_rows: int = 512,
        max_wait_ms: float = 0.0,
        inline_rows: int = 64,
        inline_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.forward = forward  # (B, F) float32 -> (B, K) float32, no cross-row dependence
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_ms / 1000
        self.inline_rows = inline_rows
        self.inline_s = inline_ms / 1000  # 0: large batches always run in the worker thread
        self._small_at = -math.inf  # loop time of the last small request queued
        self._seconds_per_row: float | None = None  # of the last large forwards (wall time, averaged)
        # Called on the loop's thread with the row count of every forward pass (metrics).
        self.on_batch = on_batch
        self._pending: list[Request] = []
        self._scheduled: asyncio.Handle | None = None
        self._busy = False  # the worker thread is running a batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnserve-forward")

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Gives back the forward output for ``rows`` (B, F), computed in a batch with other callers' rows."""
        return await self.enqueue(rows)

    @overload
    def enqueue(self, rows: np.ndarray) -> asyncio.Future[np.ndarray]: ...
    @overload
    def enqueue(self, rows: np.ndarray, waiter: W) -> W: ...

    def enqueue(self, rows: np.ndarray, waiter: Waiter | None = None) -> Waiter:
        """Queues ``rows`` (B, F) for the next batch; gives back ``waiter`` (by default a new future), which
        gets their output. What ``submit`` awaits: a caller that awaits this future itself saves a coroutine
        on the one-row path, and one that passes its own waiter gets the output from inside the batch's
        completion, in the same turn of the loop, with no task to wake."""
        loop = asyncio.get_running_loop()
        future = loop.create_future() if waiter is None else waiter
        self._pending.append((rows, future))
        if len(rows) <= self.inline_rows:
            self._small_at = loop.time()
        if self.max_wait > 0 and self._pending_rows() >= self.max_batch_rows:
            self._cancel_schedule()  # the batch is full (or this request alone fills it): no reason to wait
            self._scheduled = loop.call_soon(self._flush)
        elif self._scheduled is None:
            wait = self.max_wait
            self._scheduled = loop.call_later(wait, self._flush) if wait > 0 else loop.call_soon(self._flush)
        return future

    def close(self) -> None:
        self._cancel_schedule()
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _pending_rows(self) -> int:
        return sum(len(rows) for rows, _ in self._pending)

    def _cancel_schedule(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def _flush(self) -> None:
        self._scheduled = None
        while True:
            batch = self._take_batch(small_only=self._busy)
            if not batch:
                return
            rows = sum(len(r) for r, _ in batch)
            if rows <= self.inline_rows:
                self._deliver(batch, *self._run(batch))
                continue
            loop = asyncio.get_running_loop()
            if self._runs_inline(rows, loop.time()):
                self._deliver(batch, *self._run_timed(batch, rows))
                continue
            self._busy = True
            done = loop.run_in_executor(self._executor, self._run_timed, batch, rows)
            done.add_done_callback(functools.partial(self._on_threaded_done, batch))

    def _take_batch(self, *, small_only: bool) -> list[Request]:
        """Gives back the next batch, in arrival order; ``small_only``: only requests that may run inline.

        A single request larger than ``max_batch_rows`` still runs, alone: it was already accepted.
        """
        limit = min(self.inline_rows, self.max_batch_rows) if small_only else self.max_batch_rows
        batch: list[Request] = []
        kept: list[Request] = []
        rows = 0
        for i, item in enumerate(self._pending):
            n = len(item[0])
            if item[1].done():  # the caller went away
                continue
            if small_only and n > self.inline_rows:
                kept.append(item)  # waits for the thread
                continue
            if batch and rows + n > limit:
                kept += self._pending[i:]
                break
            batch.append(item)
            rows += n
        self._pending = kept
        return batch

    def _runs_inline(self, rows: int, now: float) -> bool:
        """Whether a batch of ``rows`` (more than ``inline_rows``) runs on the loop (see the module's doc)."""
        spr = self._seconds_per_row
        return spr is not None and rows * spr <= self.inline_s and now - self._small_at > QUIET_S

    def _run_timed(self, batch: list[Request], rows: int) -> tuple[list[Outcome], list[int]]:
        """``_run`` for a large batch, keeping its wall time per row (averaged with the last ones') for
        ``_runs_inline``; on the loop or in the worker thread, one at a time."""
        start = time.perf_counter()
        result = self._run(batch)
        if self.inline_s > 0 and result[1]:  # a forward that ran through: its time says what one costs
            spr = (time.perf_counter() - start) / rows
            last = self._seconds_per_row
            self._seconds_per_row = spr if last is None else 0.75 * last + 0.25 * spr
        return result

    def _run(self, batch: list[Request]) -> tuple[list[Outcome], list[int]]:
        """Gives back each request's output or exception, and the row count of each forward pass that
        succeeded; runs on the loop or in the worker thread."""
        try:
            x = batch[0][0] if len(batch) == 1 else np.concatenate([rows for rows, _ in batch])
            out = self.forward(x)
        except Exception as e:
            if len(batch) == 1:
                return [e], []
            # Find whose rows fail: the others must not pay for them.
            each: list[Outcome] = []
            forwards: list[int] = []
            for item in batch:
                one, ran = self._run([item])
                each += one
                forwards += ran
            return each, forwards
        outcomes: list[Outcome] = []
        start = 0
        for rows, _ in batch:
            outcomes.append(out[start : start + len(rows)])
            start += len(rows)
        return outcomes, [len(x)]

    def _on_threaded_done(
        self, batch: list[Request], f: asyncio.Future[tuple[list[Outcome], list[int]]]
    ) -> None:
        self._busy = False
        try:
            outcomes, forwards = f.result()
        except BaseException as e:  # the executor was shut down, or the task was cancelled
            outcomes, forwards = [e] * len(batch), []
        self._deliver(batch, outcomes, forwards)
        if self._pending and self._scheduled is None:
            # Requests that queued during the forward form the next batch right away.
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def _deliver(self, batch: list[Request], outcomes: list[Outcome], forwards: list[int]) -> None:
        """Hands each caller its outcome and shows ``on_batch`` each forward pass; on the loop's thread, so
        the hook (the metrics' tallies) is only ever called from there."""
        if self.on_batch is not None:
            for rows in forwards:
                try:
                    self.on_batch(rows)
                except Exception:  # a metrics hook must never keep answers from their callers
                    log.exception("on_batch hook failed")
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # cancelled while its batch ran
                continue
            if isinstance(outcome, asyncio.CancelledError):  # the executor shut down under it
                future.cancel()
            elif isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
