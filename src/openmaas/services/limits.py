"""Rate limits per key and per tenant (requests and tokens per minute), with OpenAI's x-ratelimit headers."""

from __future__ import annotations

import math

from openmaas.domain.entities import Principal
from openmaas.errors import RateLimited
from openmaas.storage.counters import Counters

WINDOW = 60


def duration(seconds: float) -> str:
    """OpenAI's reset format: `250ms`, `12s`, `1m3s`."""
    if seconds < 1:
        return f"{max(1, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class RateLimiter:
    def __init__(self, counters: Counters, window_seconds: int = WINDOW) -> None:
        self.counters = counters
        self.window = window_seconds  # 60: the limits are per minute; tests shorten it

    def _scopes(self, principal: Principal, name: str) -> list[tuple[str, int]]:
        """(counter key, limit) for each limit that applies: the key's own and its tenant's."""
        out = []
        if (limit := principal.key_limits.get(name)) is not None:
            out.append((f"key:{principal.key_id}:{name}", int(limit)))
        if (limit := principal.tenant_limits.get(name)) is not None:
            out.append((f"tenant:{principal.tenant_id}:{name}", int(limit)))
        return out

    async def admit_request(self, principal: Principal) -> dict[str, str]:
        """Count one request against requests_per_minute; 429 when over. Returns the headers to send."""
        headers: dict[str, str] = {}
        tightest: tuple[int, int, float] | None = None  # (remaining, limit, reset)
        for key, limit in self._scopes(principal, "requests_per_minute"):
            count, reset = await self.counters.add(key, 1, self.window)
            remaining = limit - count
            if remaining < 0:
                raise self._refusal("requests", limit, reset)
            if tightest is None or remaining < tightest[0]:
                tightest = (remaining, limit, reset)
        if tightest is not None:
            remaining, limit, reset = tightest
            headers = {
                "x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": duration(reset),
            }
        return headers

    async def check_tokens(self, principal: Principal) -> None:
        """Refuse when a tokens_per_minute budget is already spent in this window."""
        for key, limit in self._scopes(principal, "tokens_per_minute"):
            count, reset = await self.counters.peek(key, self.window)
            if count >= limit:
                raise self._refusal("tokens", limit, reset)

    async def charge_tokens(self, principal: Principal, tokens: int) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, limit in self._scopes(principal, "tokens_per_minute"):
            count, reset = await self.counters.add(key, tokens, self.window)
            headers = {
                "x-ratelimit-limit-tokens": str(limit),
                "x-ratelimit-remaining-tokens": str(max(0, limit - count)),
                "x-ratelimit-reset-tokens": duration(reset),
            }
        return headers

    @staticmethod
    def _refusal(kind: str, limit: int, reset: float) -> RateLimited:
        return RateLimited(
            f"rate limit reached: {limit} {kind} per minute; retry after {math.ceil(reset)}s",
            code=f"rate_limit_{kind}",
            headers={
                "Retry-After": str(max(1, math.ceil(reset))),
                f"x-ratelimit-limit-{kind}": str(limit),
                f"x-ratelimit-remaining-{kind}": "0",
                f"x-ratelimit-reset-{kind}": duration(reset),
            },
        )
