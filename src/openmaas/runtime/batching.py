"""A standalone dynamic batch queue: concurrent requests' items run together, each caller gets its own slice.

A batch starts as soon as the model is free, with whatever is queued, up to `max_batch_size` items; while
it runs, new requests gather for the next one. So a lone request never waits, and under load batches
fill by themselves. `max_wait_ms` > 0 also holds a batch that is not full for up to that long, trading
latency for fuller batches. Batches run off the event loop on the queue's own threads, `concurrency` at a
time (1 by default: one forward pass at a time per model; a model that spreads a batch over several
threads may want a second batch ready to keep them busy). A request's items may be split across batches;
its results come back in order. The queue is bounded: a request that does not fit is refused at
once (`QueueFull`) instead of piling up.

The only request in the queue runs on the event loop itself when its batch is expected to take less than
`inline_seconds` (from the time per item measured so far): for a model as small as bow-mlp the hand-off to a
thread and back costs more than the forward pass (bow-mlp at 1 client: 1,737-1,796 requests/s against
1,311-1,492 through a lane; even at 8 clients, where other requests are about and a lane takes the batch).

A model that runs a batch in parts (several forward passes) may hand each part's results back as the part
ends (`run_parts`): a request is answered when its own items are done, not when the whole batch is, so its
client sends the next one sooner and the next batch finds it waiting.

A batch whose model call raises is run again in halves (the positions it left without results), down to
single items: an item that fails on its own gets its error, every other item its result, so one caller's
bad input cannot fail the requests it happened to share a batch with. That costs at most 2n - 1 calls for a
batch of n items (when every item fails), and about 2·log2(n) more for one bad item.

There is no scheduling task: a batch is started by the call that makes it possible (a submit, the end of
the previous batch, the end of a wait), and its results come back through a callback on the loop per part.
That keeps the per-request cost of the queue to a future, a thread hand-off and a wake-up of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


# Hands (batch positions, their results) back while a batch runs; called from the batch's threads.
Deliver = Callable[[Sequence[int], Sequence[Any]], None]


class QueueFull(Exception):
    """The queue has no room for the request; `retry_after` is a hint in seconds."""

    def __init__(self, queued: int, capacity: int, retry_after: float) -> None:
        super().__init__(f"{queued} items queued, capacity {capacity}")
        self.queued = queued
        self.capacity = capacity
        self.retry_after = retry_after


class RequestTooLarge(Exception):
    """The request has more items than the whole queue holds: it could never be admitted."""


class BatchQueueClosed(Exception):
    """The model was unloaded while the request waited."""


class RequestTimedOut(Exception):
    """The request's items were not all done within its `timeout`."""


@dataclass(frozen=True)
class _Failed:
    """A position's result when its item failed on its own: its request gets `error`."""

    error: Exception


@dataclass
class _Request(Generic[In, Out]):
    items: Sequence[In]
    results: list[Any]
    future: asyncio.Future[list[Out]]
    remaining: int
    next_item: int = 0


@dataclass
class _Running(Generic[In, Out]):
    """A batch on a lane: (request, item index) per position, and how many positions have their result."""

    items: list[tuple[_Request[In, Out], int]]
    delivered: int = 0  # distinct positions with their result, on the loop
    done: bytearray = field(default_factory=bytearray)  # per position: 1 once delivered
    handed: int = 0  # on the batch's threads, under `lock`
    last: list[tuple[Sequence[int], Sequence[Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class BatchStats:
    """What the metrics layer observes, without the queue knowing about Prometheus."""

    on_batch: list[Callable[[int, float], None]] = field(default_factory=list)  # (size, seconds)
    # (tokens generated, seconds to the first token, whole seconds) per generation
    on_generation: list[Callable[[int, float, float], None]] = field(default_factory=list)


class BatchQueue(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 0.0,
        max_queue_size: int = 1024,
        concurrency: int = 1,
        name: str = "model",
        stats: BatchStats | None = None,
        run_parts: Callable[[list[In], Deliver], None] | None = None,
        inline_seconds: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if max_queue_size < max_batch_size:
            raise ValueError("max_queue_size must hold at least one batch")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.run_batch = run_batch
        # `run_parts(items, deliver)` calls `deliver(positions, results)` once per part, every position once.
        self.run_parts = run_parts or self._whole
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue_size = max_queue_size
        self.concurrency = concurrency
        self.name = name
        self.stats = stats or BatchStats()
        self._pending: deque[_Request[In, Out]] = deque()
        self._queued_items = 0
        # One thread per lane, and the lane that finished last runs the next batch: a lone request keeps
        # meeting the same warm thread instead of waking each lane's in turn.
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}") for _ in range(concurrency)]
        self._idle = self._lanes[::-1]  # a stack
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: asyncio.TimerHandle | None = None  # a partial batch waiting out max_wait
        self._closed = False
        self._batch_seconds = 0.01  # running estimate, for Retry-After
        self.inline_seconds = inline_seconds
        self._item_seconds: float | None = None  # running estimate per item; None until a batch has run
        self._submitted = 0  # requests inside submit(): queued, running, or waiting for their last items

    @property
    def depth(self) -> int:
        """Items waiting to run."""
        return self._queued_items

    async def submit(self, items: Sequence[In], timeout: float | None = None) -> list[Out]:
        """The items' results in order. After `timeout` seconds without them all, `RequestTimedOut`: the items
        not yet run leave the queue. (A timer, not `asyncio.timeout`: a request run inline never needs it.)"""
        if self._closed:
            raise BatchQueueClosed(self.name)
        if not items:
            return []
        if len(items) > self.max_queue_size:
            raise RequestTooLarge(f"{len(items)} items, but the queue holds at most {self.max_queue_size}")
        if self._queued_items + len(items) > self.max_queue_size:
            batches_ahead = self._queued_items / self.max_batch_size / self.concurrency + 1
            raise QueueFull(self._queued_items, self.max_queue_size, max(1.0, batches_ahead * self._batch_seconds))
        self._loop = loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Out]] = loop.create_future()
        self._pending.append(_Request(items, [None] * len(items), future, len(items)))
        self._queued_items += len(items)
        self._submitted += 1
        expiry: asyncio.TimerHandle | None = None
        try:
            self._start_batches()
            if timeout is not None and not future.done():
                expiry = loop.call_later(timeout, self._expire, future, timeout)
            return await future
        finally:
            self._submitted -= 1
            if expiry is not None:
                expiry.cancel()
            if not future.done():  # the caller went away (a disconnect): drop what has not run yet
                future.cancel()
            elif not future.cancelled():
                future.exception()  # seen, even by a caller cancelled right after its request failed

    @staticmethod
    def _expire(future: asyncio.Future[list[Out]], timeout: float) -> None:
        if not future.done():  # what has not run yet is skipped, what runs is not delivered to it
            future.set_exception(RequestTimedOut(f"not done within {timeout:g}s"))

    def _start_batches(self) -> None:
        """Hand batches to free threads while items wait; a partial batch may be held for max_wait first."""
        while self._idle and self._queued_items and not self._closed:
            if self._queued_items < self.max_batch_size and self.max_wait > 0:
                if self._held is None:
                    assert self._loop is not None
                    self._held = self._loop.call_later(self.max_wait, self._release_held)
                return
            if self._held is not None:
                self._held.cancel()
                self._held = None
            self._start_one()

    def _release_held(self) -> None:
        self._held = None
        while self._idle and self._queued_items and not self._closed:
            self._start_one()

    def _start_one(self) -> None:
        batch = self._take_batch()
        if not batch:
            return
        if self._inline(batch):
            self._run_inline(batch)
        else:
            self._run(batch)

    def _inline(self, batch: list[tuple[_Request[In, Out], int]]) -> bool:
        """The only request in the queue (none waiting, none running), the rest of it in this batch, of a model
        measured to be fast. With other requests about, a lane is worth its hand-off: the loop reads and answers
        them while it runs; and a request of many batches must not hold the loop for all of them."""
        if self._item_seconds is None or self._item_seconds * len(batch) > self.inline_seconds:
            return False
        return len(self._idle) == len(self._lanes) and self._submitted == 1 and not self._queued_items

    def _take_batch(self) -> list[tuple[_Request[In, Out], int]]:
        """Up to max_batch_size (request, item index) pairs, oldest first; skips cancelled requests."""
        batch: list[tuple[_Request[In, Out], int]] = []
        while self._pending and len(batch) < self.max_batch_size:
            request = self._pending[0]
            if request.future.done():
                self._queued_items -= len(request.items) - request.next_item
                self._pending.popleft()
                continue
            take = min(len(request.items) - request.next_item, self.max_batch_size - len(batch))
            batch.extend((request, request.next_item + i) for i in range(take))
            request.next_item += take
            self._queued_items -= take
            if request.next_item == len(request.items):
                self._pending.popleft()
        return batch

    def _whole(self, inputs: list[In], deliver: Deliver) -> None:
        outputs = self.run_batch(inputs)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"batch of {len(inputs)} gave {len(outputs)} results")
        deliver(range(len(inputs)), outputs)

    def _run(self, batch: list[tuple[_Request[In, Out], int]]) -> None:
        loop = self._loop
        assert loop is not None
        running: _Running[In, Out] = _Running(batch, done=bytearray(len(batch)))
        inputs = [request.items[index] for request, index in batch]
        started = time.perf_counter()
        lane = self._idle.pop()

        # Both run on the batch's threads. Every part's delivery is queued on the loop before the batch's
        # end (the runner returns after its parts), and the loop runs them in that order. The part that
        # completes the batch travels with its end, so the lane is free again before its requests are
        # answered: a lone client's next request finds the same warm lane.
        def deliver(positions: Sequence[int], outputs: Sequence[Any]) -> None:
            with running.lock:
                running.handed += len(positions)
                if running.handed >= len(batch):
                    running.last.append((positions, outputs))
                    return
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(self._deliver, running, positions, outputs)

        def finished(done: Future[None]) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._finish, lane, running, done, started)

        lane.submit(self._run_isolating, inputs, deliver).add_done_callback(finished)

    def _run_isolating(self, inputs: list[In], deliver: Deliver) -> None:
        """`run_parts` on the batch; when it raises, again on each half of the positions still without a result,
        down to single items, which get their own failure (see the module's docstring for what that costs)."""
        runs = [list(range(len(inputs)))]
        while runs:
            positions = runs.pop()
            handed: set[int] = set()
            try:
                self.run_parts([inputs[p] for p in positions], functools.partial(_hand, positions, handed, deliver))
            except Exception as error:
                left = [p for i, p in enumerate(positions) if i not in handed]
                if len(positions) == 1:
                    log.error("an item failed on %s", self.name, exc_info=error)
                    deliver(left, [_Failed(error)] * len(left))
                elif left:
                    log.warning("a batch of %d failed on %s (%s): in halves", len(positions), self.name, error)
                    middle = (len(left) + 1) // 2
                    runs.extend(half for half in (left[middle:], left[:middle]) if half)

    def _deliver(self, running: _Running[In, Out], positions: Sequence[int], outputs: Sequence[Any]) -> None:
        if len(positions) != len(outputs):
            log.error("a part of %d positions gave %d results on %s", len(positions), len(outputs), self.name)
            return  # its requests fail when the batch ends with positions undelivered
        for position, output in zip(positions, outputs, strict=True):
            if running.done[position]:
                continue  # a runner that hands a position twice: the first result stands
            running.done[position] = 1
            running.delivered += 1
            request, index = running.items[position]
            if request.future.done():
                continue
            if isinstance(output, _Failed):
                request.future.set_exception(output.error)
                continue
            request.results[index] = output
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.results)

    def _run_inline(self, batch: list[tuple[_Request[In, Out], int]]) -> None:
        """On the event loop, no lane busy: nothing else runs the model meanwhile."""
        running: _Running[In, Out] = _Running(batch, done=bytearray(len(batch)))
        started = time.perf_counter()
        try:
            self._run_isolating(
                [request.items[index] for request, index in batch], functools.partial(self._deliver, running)
            )
        except Exception as error:  # reported by _complete, like a lane's
            self._complete(running, error, started)
        else:
            self._complete(running, None, started)

    def set_concurrency(self, concurrency: int) -> None:
        """Run up to `concurrency` batches at once from now on (the replicas behind a remote model were scaled):
        new lanes take waiting batches at once; lanes over the count retire, idle ones now, busy ones when their
        batch ends. On the event loop, like `submit`."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        if self._closed:
            return
        while len(self._lanes) < concurrency:
            lane = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{self.name}")
            self._lanes.append(lane)
            self._idle.insert(0, lane)  # under the warm lanes: a lone request keeps meeting the same one
        while len(self._lanes) > concurrency and self._idle:
            self._retire(self._idle.pop(0))  # the coldest idle lane
        self._start_batches()

    def _retire(self, lane: ThreadPoolExecutor) -> None:
        self._lanes.remove(lane)
        lane.shutdown(wait=False)

    def _finish(self, lane: ThreadPoolExecutor, running: _Running[In, Out], done: Future[None], started: float) -> None:
        if len(self._lanes) > self.concurrency:  # scaled down while it ran
            self._retire(lane)
        else:
            self._idle.append(lane)
        failure = RuntimeError("the batch was cancelled") if done.cancelled() else done.exception()
        self._complete(running, failure, started)
        self._start_batches()

    def _complete(self, running: _Running[In, Out], failure: BaseException | None, started: float) -> None:
        for positions, outputs in running.last:
            self._deliver(running, positions, outputs)
        batch = running.items
        try:
            if failure is not None:
                raise failure
            if running.delivered != len(batch):
                raise RuntimeError(f"batch of {len(batch)} gave {running.delivered} results")
        except Exception as error:  # one failing batch fails its requests, not the queue
            log.error("batch of %d failed on %s", len(batch), self.name, exc_info=error)
            for request, _ in batch:
                if not request.future.done():
                    request.future.set_exception(error)
        else:
            elapsed = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            per_item = elapsed / len(batch)
            self._item_seconds = per_item if self._item_seconds is None else 0.8 * self._item_seconds + 0.2 * per_item
            for callback in self.stats.on_batch:
                callback(len(batch), elapsed)

    async def close(self) -> None:
        """Refuse new requests and fail the waiting ones; a batch already running still answers its requests."""
        self._closed = True
        if self._held is not None:
            self._held.cancel()
            self._held = None
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(BatchQueueClosed(self.name))
        self._pending.clear()
        self._queued_items = 0
        for lane in self._lanes:
            lane.shutdown(wait=False)


def _hand(
    positions: Sequence[int], handed: set[int], deliver: Deliver, local: Sequence[int], outputs: Sequence[Any]
) -> None:
    """A part of a run on `positions`: its results, at the batch's positions, and which of the run's it covered."""
    handed.update(local)
    deliver([positions[i] for i in local], outputs)
