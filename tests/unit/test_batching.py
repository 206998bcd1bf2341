"""The batch queue on its own: batching, order, bounds, cancellation and failure, without a server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from openmaas.runtime.batching import BatchQueue, BatchQueueClosed, QueueFull, RequestTimedOut, RequestTooLarge


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append(list(items))
        return [item * 10 for item in items]


async def test_concurrent_requests_run_as_fewer_batches() -> None:
    run = Recorder()
    queue = BatchQueue(run, max_batch_size=8, max_wait_ms=50, max_queue_size=64)
    results = await asyncio.gather(*(queue.submit([i]) for i in range(16)))
    assert results == [[i * 10] for i in range(16)]
    assert len(run.batches) == 2 and all(len(b) == 8 for b in run.batches)
    await queue.close()


async def test_a_request_split_across_batches_comes_back_in_order() -> None:
    run = Recorder()
    queue = BatchQueue(run, max_batch_size=4, max_wait_ms=0, max_queue_size=64)
    first, second = await asyncio.gather(queue.submit(list(range(10))), queue.submit([100, 101]))
    assert first == [i * 10 for i in range(10)] and second == [1000, 1010]
    assert max(len(b) for b in run.batches) == 4
    await queue.close()


async def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    run = Recorder()
    run.gate.clear()  # hold the first batch so the queue fills up
    queue = BatchQueue(run, max_batch_size=2, max_wait_ms=0, max_queue_size=4)
    first = asyncio.ensure_future(queue.submit([1, 2]))
    await asyncio.sleep(0.05)  # [1, 2] is running; the queue is empty again
    waiting = asyncio.ensure_future(queue.submit([3, 4, 5, 6]))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(QueueFull) as caught:
        await queue.submit([7])
    assert time.monotonic() - started < 0.05 and caught.value.retry_after >= 1
    with pytest.raises(RequestTooLarge):
        await queue.submit(list(range(5)))
    run.gate.set()
    assert await first == [10, 20] and await waiting == [30, 40, 50, 60]
    await queue.close()


async def test_a_cancelled_request_leaves_the_queue_without_running() -> None:
    run = Recorder()
    run.gate.clear()
    queue = BatchQueue(run, max_batch_size=1, max_wait_ms=0, max_queue_size=8)
    running = asyncio.ensure_future(queue.submit([1]))
    await asyncio.sleep(0.05)
    abandoned = asyncio.ensure_future(queue.submit([2, 3]))
    await asyncio.sleep(0.01)
    assert queue.depth == 2
    abandoned.cancel()  # what a client disconnect or a timeout does
    await asyncio.sleep(0.01)
    run.gate.set()
    assert await running == [10]
    assert await queue.submit([4]) == [40]
    assert [b for batch in run.batches for b in batch] == [1, 4]
    assert queue.depth == 0
    await queue.close()


async def test_a_request_past_its_timeout_fails_and_its_items_never_run() -> None:
    run = Recorder()
    run.gate.clear()
    queue = BatchQueue(run, max_batch_size=1, max_wait_ms=0, max_queue_size=8)
    running = asyncio.ensure_future(queue.submit([1], timeout=5))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(RequestTimedOut):
        await queue.submit([2, 3], timeout=0.1)
    assert 0.09 < time.monotonic() - started < 1
    run.gate.set()
    assert await running == [10]
    assert await queue.submit([4], timeout=5) == [40]
    assert [b for batch in run.batches for b in batch] == [1, 4] and queue.depth == 0
    await queue.close()


async def test_a_failing_batch_fails_its_requests_and_the_queue_goes_on() -> None:
    calls = []

    def flaky(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    queue = BatchQueue(flaky, max_batch_size=4, max_wait_ms=0, max_queue_size=8)
    with pytest.raises(RuntimeError, match="boom"):
        await queue.submit([1])
    assert await queue.submit([2]) == [2]
    await queue.close()


async def test_closing_fails_waiting_requests() -> None:
    run = Recorder()
    run.gate.clear()
    queue = BatchQueue(run, max_batch_size=1, max_wait_ms=0, max_queue_size=8)
    first = asyncio.ensure_future(queue.submit([1]))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(queue.submit([2]))
    await asyncio.sleep(0.01)
    await queue.close()
    run.gate.set()
    with pytest.raises(BatchQueueClosed):
        await waiting
    first.cancel()
    with pytest.raises(BatchQueueClosed):
        await queue.submit([3])


@pytest.mark.parametrize(("batch", "wait", "size"), [(0, 1.0, 10), (4, -1.0, 10), (8, 1.0, 4)])
def test_settings_are_validated_at_construction(batch: int, wait: float, size: int) -> None:
    with pytest.raises(ValueError):
        BatchQueue(lambda items: items, max_batch_size=batch, max_wait_ms=wait, max_queue_size=size)


async def test_without_a_wait_a_lone_request_runs_at_once_and_batches_form_while_the_model_is_busy() -> None:
    run = Recorder()
    queue = BatchQueue(run, max_batch_size=16, max_wait_ms=0, max_queue_size=64)
    started = time.monotonic()
    assert await queue.submit([1]) == [10]
    assert time.monotonic() - started < 0.05
    run.gate.clear()
    busy = asyncio.ensure_future(queue.submit([2]))
    await asyncio.sleep(0.02)  # [2] is running; the next ten requests queue up behind it
    waiting = [asyncio.ensure_future(queue.submit([i])) for i in range(3, 13)]
    await asyncio.sleep(0.02)
    run.gate.set()
    assert await busy == [20] and [await w for w in waiting] == [[i * 10] for i in range(3, 13)]
    assert run.batches == [[1], [2], list(range(3, 13))]
    await queue.close()


async def test_with_two_lanes_a_second_batch_runs_while_the_first_is_held_and_order_is_kept() -> None:
    first_gate = threading.Event()
    threads: list[int] = []

    def run(items: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        if items[0] < 4:  # the first batch finishes last
            first_gate.wait(5)
        return [item * 10 for item in items]

    queue = BatchQueue(run, max_batch_size=4, max_wait_ms=0, max_queue_size=64, concurrency=2)
    held = asyncio.ensure_future(queue.submit(list(range(6))))  # [0..3] on one lane, [4, 5] on the other
    await asyncio.sleep(0.05)
    later = await asyncio.wait_for(queue.submit([9]), 1)  # a lane is free although [0..3] is still running
    assert later == [90] and not held.done()
    first_gate.set()
    assert await held == [i * 10 for i in range(6)]
    assert len(set(threads)) == 2
    await queue.close()


async def test_a_lone_request_keeps_the_same_lane() -> None:
    threads: list[int] = []

    def run(items: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        return items

    queue = BatchQueue(run, max_batch_size=4, max_wait_ms=0, max_queue_size=64, concurrency=2)
    for i in range(5):
        assert await queue.submit([i]) == [i]
    assert len(set(threads)) == 1
    await queue.close()


async def test_a_request_is_answered_when_its_own_part_ends_not_the_whole_batch() -> None:
    second_part = threading.Event()

    def run_parts(items: list[int], deliver: Callable[[Sequence[int], Sequence[int]], None]) -> None:
        deliver([1, 3], [items[1] * 10, items[3] * 10])  # a first forward pass, out of input order
        second_part.wait(5)
        deliver([0, 2], [items[0] * 10, items[2] * 10])

    queue: BatchQueue[int, int] = BatchQueue(
        lambda items: items, run_parts=run_parts, max_batch_size=4, max_wait_ms=50, max_queue_size=64
    )
    requests = [asyncio.ensure_future(queue.submit([i])) for i in range(4)]
    done, _ = await asyncio.wait(requests, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(0.05)
    assert [request.done() for request in requests] == [False, True, False, True]  # the batch is still running
    assert requests[1].result() == [10] and requests[3].result() == [30]
    second_part.set()
    assert await asyncio.gather(*requests) == [[0], [10], [20], [30]]
    await queue.close()


async def test_a_batch_whose_parts_leave_positions_out_fails_those_requests_only() -> None:
    def run_parts(items: list[int], deliver: Callable[[Sequence[int], Sequence[int]], None]) -> None:
        deliver([0], [items[0]])  # position 1 is never delivered

    queue: BatchQueue[int, int] = BatchQueue(
        lambda items: items, run_parts=run_parts, max_batch_size=2, max_wait_ms=50, max_queue_size=64
    )
    first, second = await asyncio.gather(queue.submit([5]), queue.submit([6]), return_exceptions=True)
    assert first == [5]
    assert isinstance(second, RuntimeError) and "gave 1 results" in str(second)
    await queue.close()


async def test_a_position_handed_twice_does_not_stand_for_one_never_handed() -> None:
    def run_parts(items: list[int], deliver: Callable[[Sequence[int], Sequence[int]], None]) -> None:
        deliver([0], [items[0]])
        deliver([0], [-1])  # position 0 again (its first result stands), and position 1 never

    queue: BatchQueue[int, int] = BatchQueue(
        lambda items: items, run_parts=run_parts, max_batch_size=2, max_wait_ms=50, max_queue_size=64
    )
    results = await asyncio.wait_for(
        asyncio.gather(queue.submit([5]), queue.submit([6]), return_exceptions=True), timeout=5
    )
    assert results[0] == [5] and isinstance(results[1], RuntimeError)
    await queue.close()


async def test_a_lone_request_of_a_fast_model_runs_on_the_event_loop_and_concurrent_ones_on_a_lane() -> None:
    threads: list[int] = []

    def run(items: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        return [item * 10 for item in items]

    # max_wait holds a partial batch, so that two requests can be in the queue when it starts
    queue = BatchQueue(run, max_batch_size=4, max_wait_ms=20, max_queue_size=64, inline_seconds=0.5)
    loop_thread = threading.get_ident()
    assert await queue.submit([1]) == [10]  # nothing measured yet: a lane
    assert threads[-1] != loop_thread
    assert await queue.submit([2, 3]) == [20, 30]  # measured fast, alone in the queue: on the loop
    assert threads[-1] == loop_thread
    assert await asyncio.gather(queue.submit([4]), queue.submit([5])) == [[40], [50]]
    assert threads[-1] != loop_thread  # two requests in the queue: a lane, while the loop serves the others
    threads.clear()
    # three batches: the loop takes at most the last (nothing queued behind it), never a run of them
    assert await queue.submit(list(range(10))) == [i * 10 for i in range(10)]
    assert len(threads) == 3 and loop_thread not in threads[:2]
    await queue.close()


async def test_a_slow_model_never_runs_on_the_event_loop() -> None:
    threads: list[int] = []

    def run(items: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        time.sleep(0.01)
        return items

    queue = BatchQueue(run, max_batch_size=4, max_wait_ms=0, max_queue_size=64, inline_seconds=0.001)
    for i in range(3):
        assert await queue.submit([i]) == [i]
    assert threading.get_ident() not in threads
    await queue.close()


def utf8_lengths(items: list[str]) -> list[int]:
    """A model's own first step, as a tokenizer does it: text that is not Unicode fails, for the whole batch."""
    return [len(text.encode("utf-8")) for text in items]


async def test_a_batch_failing_on_one_item_fails_that_request_only_and_answers_the_others() -> None:
    calls: list[list[str]] = []

    def run(items: list[str]) -> list[int]:
        calls.append(items)
        return utf8_lengths(items)

    queue: BatchQueue[str, int] = BatchQueue(run, max_batch_size=8, max_wait_ms=50, max_queue_size=64)
    texts = [f"text {i}" for i in range(8)]
    texts[5] = "bad \ud800"
    results = await asyncio.gather(*(queue.submit([text]) for text in texts), return_exceptions=True)
    assert isinstance(results[5], UnicodeEncodeError)
    assert [r for i, r in enumerate(results) if i != 5] == [[len(t)] for i, t in enumerate(texts) if i != 5]
    # The whole batch, then halves down to the bad item: 1 + 2·log2(8) calls, not one per item.
    assert len(calls) == 7 and calls[0] == texts
    assert await queue.submit(["after"]) == [5]
    await queue.close()


async def test_a_batch_run_in_parts_reruns_only_the_positions_left_without_results() -> None:
    ran: list[str] = []

    def run_parts(items: list[str], deliver: Callable[[Sequence[int], Sequence[int]], None]) -> None:
        for start in range(0, len(items), 2):  # parts of two, as a model that runs a batch in parts
            part = items[start : start + 2]
            lengths = utf8_lengths(part)
            ran.extend(part)
            deliver(range(start, start + len(part)), lengths)

    queue: BatchQueue[str, int] = BatchQueue(
        utf8_lengths, run_parts=run_parts, max_batch_size=6, max_wait_ms=50, max_queue_size=64
    )
    texts = ["a", "bb", "ccc", "\ud800", "eeeee", "ffffff"]
    results = await asyncio.gather(*(queue.submit([text]) for text in texts), return_exceptions=True)
    assert isinstance(results[3], UnicodeEncodeError)
    assert [r for i, r in enumerate(results) if i != 3] == [[1], [2], [3], [5], [6]]
    assert ran.count("a") == 1 and ran.count("bb") == 1  # answered by the first run, never run again
    await queue.close()


async def test_a_rescaled_queue_runs_as_many_batches_at_once_as_it_is_told() -> None:
    running, most = 0, 0
    gate = threading.Event()
    lock = threading.Lock()

    def run(items: list[int]) -> list[int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.wait(5)
        with lock:
            running -= 1
        return [item * 10 for item in items]

    queue = BatchQueue(run, max_batch_size=1, max_wait_ms=0, max_queue_size=64, concurrency=1)
    first = [asyncio.ensure_future(queue.submit([i])) for i in range(4)]
    await asyncio.sleep(0.05)
    assert most == 1
    queue.set_concurrency(3)  # two more lanes take waiting batches at once
    await asyncio.sleep(0.05)
    assert most == 3
    gate.set()
    assert await asyncio.gather(*first) == [[0], [10], [20], [30]]
    gate.clear()
    queue.set_concurrency(1)  # the idle lanes retire
    most = 0
    second = [asyncio.ensure_future(queue.submit([i])) for i in range(3)]
    await asyncio.sleep(0.05)
    assert most == 1 and len(queue._lanes) == 1
    gate.set()
    assert await asyncio.gather(*second) == [[0], [10], [20]]
    with pytest.raises(ValueError):
        queue.set_concurrency(0)
    await queue.close()
