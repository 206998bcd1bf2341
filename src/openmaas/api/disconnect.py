"""Runs a request's work until it finishes or the client hangs up, whichever comes first.

When the client disconnects, the work is cancelled, so its inputs leave the batch queue instead of
being computed for nobody. The work runs in the request's own task; only the watcher is a task of its own,
and it starts only if the work waits: work that finishes without yielding to the loop (a small model's
lone request, run on the loop) has nothing to cancel, and a task per request costs as much as its model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    pass


async def _cancel_on_disconnect(request: Request, task: asyncio.Task[Any]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    task.cancel()


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    task = asyncio.current_task()
    assert task is not None
    watcher: asyncio.Future[None] | None = None

    def watch() -> None:  # runs on the loop's next turn, so only once the work has yielded
        nonlocal watcher
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, task))

    start = asyncio.get_running_loop().call_soon(watch)
    try:
        return await work
    except asyncio.CancelledError:
        if watcher is None or not watcher.done() or watcher.cancelled():
            raise  # cancelled from elsewhere (server shutdown): not ours to swallow
        task.uncancel()
        raise ClientDisconnected from None
    finally:
        start.cancel()
        if watcher is not None:
            watcher.cancel()
