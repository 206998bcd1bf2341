"""Fixed-window counters for rate limits: in this process, or in Redis so several API processes share them."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Counters(Protocol):
    def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float]:
        """Add to the current window's count; returns (count after adding, seconds until the window resets)."""
        ...

    def peek(self, key: str, window_seconds: int) -> tuple[int, float]: ...


def _window(window_seconds: int) -> tuple[int, float]:
    now = time.time()
    start = int(now // window_seconds) * window_seconds
    return start, start + window_seconds - now


class LocalCounters:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        with self._lock:
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= start}
            count = self._counts.get((key, start), 0) + amount
            self._counts[(key, start)] = count
        return count, reset

    def peek(self, key: str, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        return self._counts.get((key, start), 0), reset


class RedisCounters:
    """INCRBY on a key per window; the key expires with its window. Atomic across processes."""

    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.redis.ping()

    def add(self, key: str, amount: int, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        name = f"openmaas:rl:{key}:{start}"
        pipe = self.redis.pipeline()
        pipe.incrby(name, amount)
        pipe.expire(name, window_seconds + 5)
        count, _ = pipe.execute()
        return int(count), reset

    def peek(self, key: str, window_seconds: int) -> tuple[int, float]:
        start, reset = _window(window_seconds)
        value = self.redis.get(f"openmaas:rl:{key}:{start}")
        return int(value or 0), reset
