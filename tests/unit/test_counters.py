"""Rate-limit counters: Redis is spoken to without holding the event loop; the local counters count alike."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from openmaas.storage.counters import LocalCounters, RedisCounters
from tests.conftest import REDIS, redis_reachable


async def _ticks_during(work: asyncio.Future[object] | object) -> int:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    await work  # type: ignore[misc]
    task.cancel()
    return ticks


@pytest.mark.skipif(not redis_reachable(), reason="Redis at 127.0.0.1:6379 is unreachable")
async def test_a_slow_redis_does_not_hold_the_event_loop() -> None:
    import redis

    counters = await RedisCounters.connect(REDIS)
    key = f"test:{secrets.token_hex(4)}"
    try:
        assert (await counters.add(key, 2, 60))[0] == 2
        redis.Redis.from_url(REDIS).client_pause(400)  # Redis answers no client for 0.4 s
        ticks = await _ticks_during(counters.add(key, 3, 60))
        assert ticks >= 10, f"the loop ran only {ticks} times while Redis was paused"
        assert (await counters.peek(key, 60))[0] == 5
    finally:
        await counters.close()


async def test_local_counters_count_per_window() -> None:
    counters = LocalCounters()
    assert (await counters.add("k", 2, 60))[0] == 2
    assert (await counters.add("k", 3, 60))[0] == 5
    count, reset = await counters.peek("k", 60)
    assert count == 5 and 0 < reset <= 60
