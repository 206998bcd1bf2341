"""A request's work is cancelled when its client hangs up, and runs undisturbed when it does not."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from openmaas.api.disconnect import ClientDisconnected, unless_disconnected


def request_that_hangs_up(after: float | None) -> Request:
    async def receive() -> dict[str, object]:
        if after is None:
            await asyncio.Event().wait()  # a client that stays
        await asyncio.sleep(after or 0)
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


async def test_work_is_cancelled_when_the_client_disconnects_and_the_task_goes_on() -> None:
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    with pytest.raises(ClientDisconnected):
        await unless_disconnected(request_that_hangs_up(0.01), work())
    assert cancelled.is_set()
    await asyncio.sleep(0)  # the task is not left marked as cancelled
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_work_finishes_when_the_client_stays() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await unless_disconnected(request_that_hangs_up(None), work()) == "done"
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}  # the watcher is gone with the request


async def test_a_cancellation_from_elsewhere_is_not_taken_for_a_disconnect() -> None:
    async def handler() -> str:
        return await unless_disconnected(request_that_hangs_up(None), asyncio.sleep(10, "late"))

    task = asyncio.ensure_future(handler())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_work_that_never_waits_starts_no_watcher() -> None:
    tasks_during_work = set()

    async def work() -> str:
        tasks_during_work.update(asyncio.all_tasks())
        return "done"  # no await: what a small model's lone request does when it runs on the loop

    # A client already gone: a watcher, had one started, would see it at once.
    assert await unless_disconnected(request_that_hangs_up(0), work()) == "done"
    assert tasks_during_work == {asyncio.current_task()}
    await asyncio.sleep(0.01)
    assert asyncio.all_tasks() == {asyncio.current_task()}
