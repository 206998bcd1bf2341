"""A standalone dynamic batch queue: concurrent requests' items run together, each caller gets its own slice.

A batch starts as soon as the model is free, with whatever is queued, up to `max_batch_size` items; while
it runs, new requests gather for the next one. So a lone request never waits, and under load batches
fill by themselves. `max_wait_ms` > 0 also holds a batch that is not full for up to that long, trading
latency for fuller batches. Batches run off the event loop in the queue's own thread (one forward pass
at a time per model, which is what a CPU wants). A request's items may be split across batches; its
results come back in order. The queue is bounded: a request that does not fit is refused at once
(`QueueFull`) instead of piling up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


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


@dataclass
class _Request(Generic[In, Out]):
    items: Sequence[In]
    results: list[Any]
    future: asyncio.Future[list[Out]]
    remaining: int
    next_item: int = 0


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
        name: str = "model",
        stats: BatchStats | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if max_queue_size < max_batch_size:
            raise ValueError("max_queue_size must hold at least one batch")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue_size = max_queue_size
        self.name = name
        self.stats = stats or BatchStats()
        self._pending: deque[_Request[In, Out]] = deque()
        self._queued_items = 0
        self._wakeup = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._batch_seconds = 0.01  # running estimate, for Retry-After

    @property
    def depth(self) -> int:
        """Items waiting to run."""
        return self._queued_items

    async def submit(self, items: Sequence[In]) -> list[Out]:
        if self._closed:
            raise BatchQueueClosed(self.name)
        if not items:
            return []
        if len(items) > self.max_queue_size:
            raise RequestTooLarge(f"{len(items)} items, but the queue holds at most {self.max_queue_size}")
        if self._queued_items + len(items) > self.max_queue_size:
            batches_ahead = self._queued_items / self.max_batch_size + 1
            raise QueueFull(self._queued_items, self.max_queue_size, max(1.0, batches_ahead * self._batch_seconds))
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"batch-queue-{self.name}")
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        request: _Request[In, Out] = _Request(items, [None] * len(items), future, len(items))
        self._pending.append(request)
        self._queued_items += len(items)
        self._wakeup.set()
        try:
            return await future
        finally:
            if not future.done():  # the caller went away (disconnect, timeout): drop what has not run yet
                future.cancel()

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

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._queued_items < self.max_batch_size and self.max_wait > 0:
                # Give concurrent requests a moment to join, but never longer than max_wait.
                deadline = time.monotonic() + self.max_wait
                while self._queued_items < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), left)
            batch = self._take_batch()
            if not batch:
                continue
            inputs = [request.items[index] for request, index in batch]
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._thread, self.run_batch, inputs)
                if len(outputs) != len(inputs):
                    raise RuntimeError(f"batch of {len(inputs)} gave {len(outputs)} results")
            except Exception as error:  # one failing batch fails its requests, not the queue
                log.exception("batch of %d failed on %s", len(inputs), self.name)
                for request, _ in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            elapsed = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            for callback in self.stats.on_batch:
                callback(len(inputs), elapsed)
            for (request, index), output in zip(batch, outputs, strict=True):
                if request.future.done():
                    continue
                request.results[index] = output
                request.remaining -= 1
                if request.remaining == 0:
                    request.future.set_result(request.results)

    async def close(self) -> None:
        self._closed = True
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(BatchQueueClosed(self.name))
        self._pending.clear()
        self._queued_items = 0
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=False)
