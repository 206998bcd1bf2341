"""Fixed-window counters for rate limits: in this process, or in Redis so several API processes share them.

Their methods are coroutines, called on the event loop: Redis is spoken to with its asyncio client, so a
round trip waits without holding the loop; the local counters never wait."""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio


class Counters(Protocol):
    async def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float]:
        """Add to the current window's count; returns (count after adding, seconds until the window resets)."""
        ...

    async def peek(self, key: str, window_seconds: int) -> tuple[int, float]: ...

    async def close(self) -> None: ...


def _window(window_seconds: int) -> tuple[int, float]:
    now = time.time()
    start = int(now // window_seconds) * window_seconds
    return start, start + window_seconds - now


class LocalCounters:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        # Only the event loop's thread counts, and nothing here awaits: no lock is needed.

    async def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= start}
        count = self._counts.get((key, start), 0) + amount
        self._counts[(key, start)] = count
        return count, reset

    async def peek(self, key: str, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        return self._counts.get((key, start), 0), reset

    async def close(self) -> None:
        pass


class RedisCounters:
    """INCRBY on a key per window; the key expires with its window. Atomic across processes."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.redis = client

    @classmethod
    async def connect(cls, url: str) -> RedisCounters:
        client = redis.asyncio.Redis.from_url(url)
        await client.ping()  # a wrong URL fails the start, not the first request
        return cls(client)

    async def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        name = f"openmaas:rl:{key}:{start}"
        async with self.redis.pipeline() as pipe:
            pipe.incrby(name, amount)
            pipe.expire(name, window_seconds + 5)
            count, _ = await pipe.execute()
        return int(count), reset

    async def peek(self, key: str, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        value = await self.redis.get(f"openmaas:rl:{key}:{start}")
        return int(value or 0), reset

    async def close(self) -> None:
        await self.redis.aclose()
