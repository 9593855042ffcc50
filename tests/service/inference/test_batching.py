"""The micro-batcher: concurrent callers share forward passes and still each get exactly their own rows.

No timing assertions: where an order of events matters, the forward blocks on an event the test controls.
A generous ``wait_for`` only keeps a broken batcher from hanging the suite.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from service.inference.batching import MicroBatcher
from service.inference.predictor import Predictor
from service.settings import Settings

HANG_GUARD_S = 30
W = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)


def per_row(x: np.ndarray) -> np.ndarray:
    """A forward with no cross-row dependence, like eval-mode BN networks: (B, 5) -> (B, 3)."""
    return np.tanh(x @ W)


def assert_own_rows(answer: np.ndarray, rows: np.ndarray) -> None:
    # Within float32 rounding: BLAS may sum in another order for another batch size.
    np.testing.assert_allclose(answer, per_row(rows), rtol=0, atol=1e-6)


def distinct_rows(sizes: list[int], features: int = 5, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, features)).astype(np.float32) for n in sizes]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD_S))


def test_concurrent_callers_each_get_exactly_their_own_rows(breast_cancer_artifact: Path) -> None:
    predictor = Predictor(Settings(model_dir=breast_cancer_artifact, device="cpu"))
    predictor.load()
    assert predictor.ready, predictor.error
    model = predictor.require_ready().model  # unfolded: the reference
    std = predictor.require_ready().manifest.input_standardization
    rng = np.random.default_rng(2)
    sizes = [1, 3, 1, 7, 2, 1, 5, 1] * 25
    requests = [
        (np.asarray(std.mean) + rng.normal(size=(n, len(std.mean))) * np.asarray(std.std)).astype(np.float32)
        for n in sizes
    ]
    batch_rows: list[int] = []

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(predictor.runtime.forward, on_batch=batch_rows.append)
        try:
            return await asyncio.gather(*(batcher.submit(rows) for rows in requests))
        finally:
            batcher.close()

    answers = run(main())
    assert max(batch_rows) > 1, "the requests were never merged"
    with torch.inference_mode():
        for rows, answer in zip(requests, answers, strict=True):
            logits = torch.cat([model(torch.from_numpy(row[None])) for row in rows])
            alone = torch.cat([torch.softmax(logits, dim=1), logits], dim=1)  # the runtime keeps the logits
            torch.testing.assert_close(torch.from_numpy(answer), alone, atol=1e-6, rtol=0)
    predictor.close()


def test_concurrent_requests_are_merged_into_fewer_forward_passes() -> None:
    calls: list[int] = []
    batch_rows: list[int] = []

    def forward(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return per_row(x)

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(forward, on_batch=batch_rows.append)
        return await asyncio.gather(*(batcher.submit(rows) for rows in distinct_rows([1] * 50)))

    answers = run(main())
    assert len(calls) < 50
    assert max(batch_rows) > 1
    assert sum(batch_rows) == 50
    for rows, answer in zip(distinct_rows([1] * 50), answers, strict=True):
        assert_own_rows(answer, rows)


def test_a_request_whose_forward_raises_fails_alone_and_the_batcher_keeps_serving() -> None:
    def forward(x: np.ndarray) -> np.ndarray:
        if (x == -999).any():
            raise RuntimeError("poisoned row")
        return per_row(x)

    requests = distinct_rows([1, 2, 1, 3, 1, 1, 2, 1])
    requests[3][1, 2] = -999

    async def main() -> tuple[list[object], list[np.ndarray]]:
        batcher = MicroBatcher(forward)
        first = await asyncio.gather(*(batcher.submit(rows) for rows in requests), return_exceptions=True)
        again = await asyncio.gather(*(batcher.submit(rows) for rows in distinct_rows([2, 1, 4], seed=3)))
        return first, again

    first, again = run(main())
    assert isinstance(first[3], RuntimeError) and "poisoned" in str(first[3])
    for i, (rows, answer) in enumerate(zip(requests, first, strict=True)):
        if i != 3:
            assert_own_rows(answer, rows)
    for rows, answer in zip(distinct_rows([2, 1, 4], seed=3), again, strict=True):
        assert_own_rows(answer, rows)


def test_a_failing_large_request_in_the_worker_thread_fails_alone() -> None:
    def forward(x: np.ndarray) -> np.ndarray:
        if len(x) > 64:
            raise MemoryError("too big for the device")  # not an Exception subclass the batcher may swallow
        return per_row(x)

    def guarded(x: np.ndarray) -> np.ndarray:
        try:
            return forward(x)
        except MemoryError as e:
            raise RuntimeError(str(e)) from e

    big, *small = distinct_rows([200, 1, 2, 1])

    async def main() -> list[object]:
        batcher = MicroBatcher(guarded, inline_rows=64)
        return await asyncio.gather(
            batcher.submit(big), *(batcher.submit(r) for r in small), return_exceptions=True
        )

    answers = run(main())
    assert isinstance(answers[0], RuntimeError)
    for rows, answer in zip(small, answers[1:], strict=True):
        assert_own_rows(answer, rows)


def test_max_batch_rows_is_respected_and_a_larger_request_runs_alone() -> None:
    batch_rows: list[int] = []
    sizes = [1, 4, 2, 3, 1, 1, 4, 2] * 8 + [25]
    requests = distinct_rows(sizes)

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(per_row, max_batch_rows=10, on_batch=batch_rows.append)
        return await asyncio.gather(*(batcher.submit(rows) for rows in requests))

    answers = run(main())
    assert sum(batch_rows) == sum(sizes)
    assert 25 in batch_rows
    assert all(n <= 10 for n in batch_rows if n != 25)
    assert any(n > 4 for n in batch_rows)  # and still merged
    for rows, answer in zip(requests, answers, strict=True):
        assert_own_rows(answer, rows)


def test_a_full_batch_does_not_wait_out_max_wait() -> None:
    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(per_row, max_batch_rows=8, max_wait_ms=3_600_000)  # an hour
        return await asyncio.gather(*(batcher.submit(rows) for rows in distinct_rows([2, 2, 4])))

    assert len(run(main())) == 3


@pytest.mark.parametrize("rows", [8, 100])
def test_a_request_that_fills_the_batch_alone_does_not_wait_out_max_wait(rows: int) -> None:
    async def main() -> np.ndarray:
        batcher = MicroBatcher(per_row, max_batch_rows=8, max_wait_ms=3_600_000)  # an hour
        return await asyncio.wait_for(batcher.submit(distinct_rows([rows])[0]), 5)

    assert len(run(main())) == rows


def test_a_large_request_in_the_worker_thread_does_not_hold_up_small_ones() -> None:
    entered, release = threading.Event(), threading.Event()
    loop_thread: list[int] = []
    big_thread: list[int] = []

    def forward(x: np.ndarray) -> np.ndarray:
        if len(x) > 64:
            big_thread.append(threading.get_ident())
            entered.set()
            release.wait(HANG_GUARD_S)
        return per_row(x)

    big, *small = distinct_rows([1000, 1, 3, 2])

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        batcher = MicroBatcher(forward, inline_rows=64)
        big_task = asyncio.create_task(batcher.submit(big))
        await asyncio.to_thread(entered.wait, HANG_GUARD_S)
        answers = await asyncio.gather(*(batcher.submit(rows) for rows in small))
        assert not big_task.done(), "the small requests waited for the large one"
        for rows, answer in zip(small, answers, strict=True):
            assert_own_rows(answer, rows)
        release.set()
        assert_own_rows(await big_task, big)
        batcher.close()

    run(main())
    assert big_thread and big_thread[0] != loop_thread[0]


def _threads_of_large_forwards(
    sizes: list[int], *, inline_ms: float, seconds_per_row: float = 0.0
) -> list[str]:
    """Submits requests of ``sizes`` rows one after the other (each forward taking at least
    ``seconds_per_row`` per row); gives back, for each forward of more than 64 rows, whether it ran on the
    loop's thread ("loop") or not ("thread")."""
    where: list[str] = []

    def forward(x: np.ndarray) -> np.ndarray:
        if len(x) > 64:
            where.append("loop" if threading.get_ident() == loop_thread else "thread")
            if seconds_per_row:
                threading.Event().wait(seconds_per_row * len(x))
        return per_row(x)

    async def main() -> None:
        batcher = MicroBatcher(forward, inline_rows=64, inline_ms=inline_ms)
        for rows in distinct_rows(sizes):
            assert_own_rows(await asyncio.wait_for(batcher.submit(rows), HANG_GUARD_S), rows)
        batcher.close()

    loop_thread = threading.get_ident()  # asyncio.run runs the loop on this thread
    run(main())
    return where


def test_large_batches_run_on_the_loop_while_no_small_request_comes_in() -> None:
    # The first large forward has no measured cost yet: the thread. Then the loop, until a small request
    # comes in: from then on the thread again (for QUIET_S), so that small requests are not held up.
    where = _threads_of_large_forwards([500, 500, 500, 1, 500, 500], inline_ms=1000)
    assert where == ["thread", "loop", "loop", "thread", "thread"]


def test_a_large_batch_expected_over_the_budget_stays_in_the_thread() -> None:
    # 20 µs per row against a 5 ms budget: a 1,000-row forward (20 ms) never runs on the loop, even with no
    # small request; a 100-row one (2 ms) does.
    slow = 20e-6
    assert _threads_of_large_forwards([1000] * 3, inline_ms=5, seconds_per_row=slow) == ["thread"] * 3
    assert _threads_of_large_forwards([1000, 100, 1000], inline_ms=5, seconds_per_row=slow) == [
        "thread",
        "loop",
        "thread",
    ]


def test_without_an_inline_budget_large_batches_always_run_in_the_thread() -> None:
    assert _threads_of_large_forwards([500, 500, 500], inline_ms=0) == ["thread"] * 3


def test_a_cancelled_caller_does_not_break_the_others() -> None:
    entered, release = threading.Event(), threading.Event()

    def forward(x: np.ndarray) -> np.ndarray:
        if len(x) > 64:
            entered.set()
            release.wait(HANG_GUARD_S)
        return per_row(x)

    requests = distinct_rows([1, 2, 1, 3])
    big = distinct_rows([100], seed=5)[0]

    async def main() -> None:
        batcher = MicroBatcher(forward, inline_rows=64, max_wait_ms=3_600_000, max_batch_rows=7)
        # Cancelled while queued: the others of its batch still get their rows.
        tasks = [asyncio.create_task(batcher.submit(rows)) for rows in requests]
        await asyncio.sleep(0)
        tasks[1].cancel()
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(answers[1], asyncio.CancelledError)
        for i in (0, 2, 3):
            assert_own_rows(answers[i], requests[i])

        # Cancelled while its forward runs in the worker thread: the batcher keeps serving afterwards.
        big_task = asyncio.create_task(batcher.submit(big))
        await asyncio.to_thread(entered.wait, HANG_GUARD_S)
        big_task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await big_task
        again = await asyncio.gather(*(batcher.submit(rows) for rows in requests[:1] * 7))
        for answer in again:
            assert_own_rows(answer, requests[0])
        batcher.close()

    run(main())


def test_on_batch_sees_every_successful_forward_on_the_loops_thread() -> None:
    # The metrics' tallies may only be touched from the event loop's thread, the worker's forwards included;
    # a failed forward is not counted, the retries of its requests one by one are.
    def forward(x: np.ndarray) -> np.ndarray:
        if (x == -999).any():
            raise RuntimeError("poisoned row")
        return per_row(x)

    seen: list[tuple[int, int]] = []
    small = distinct_rows([1, 2, 1])
    small[1][0, 0] = -999
    big = distinct_rows([100], seed=5)[0]

    async def main() -> int:
        batcher = MicroBatcher(
            forward, inline_rows=64, on_batch=lambda n: seen.append((n, threading.get_ident()))
        )
        await asyncio.gather(batcher.submit(big), *(batcher.submit(r) for r in small), return_exceptions=True)
        return threading.get_ident()

    loop_thread = run(main())
    assert {thread for _, thread in seen} == {loop_thread}
    # the 100-row forward (in the worker thread), then the small batch's retries: rows 1 and 1 (the 2 failed)
    assert sorted(n for n, _ in seen) == [1, 1, 100]
