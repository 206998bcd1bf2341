"""Rate limits per key and per tenant (requests and tokens per minute), with OpenAI's x-ratelimit headers."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

from openmaas.domain.entities import Principal
from openmaas.errors import RateLimited
from openmaas.storage.counters import Counters

WINDOW = 60


@dataclass(frozen=True)
class Reservation:
    """Tokens counted for a request before it ran, and the headers that say what is left."""

    principal: Principal
    tokens: int
    window: int
    headers: dict[str, str] = field(default_factory=dict)


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

    def limits_tokens(self, principal: Principal) -> bool:
        """Whether a tokens_per_minute limit applies (then a request's tokens are counted before it runs)."""
        return bool(self._scopes(principal, "tokens_per_minute"))

    async def check_tokens(self, principal: Principal) -> None:
        """Refuse at once when a tokens_per_minute budget is already spent, before a model is loaded for a
        request whose tokens are counted only then (`reserve_tokens`)."""
        for key, limit in self._scopes(principal, "tokens_per_minute"):
            count, reset = await self.counters.peek(key, self.window)
            if count >= limit:
                raise self._refusal("tokens", limit, reset)

    async def reserve_tokens(self, principal: Principal, tokens: int) -> Reservation:
        """Count a request's own tokens before it runs, as OpenAI does: 429 when they do not fit in what is left
        of a tokens_per_minute budget, and then nothing is counted. The check and the count are one atomic add
        per counter (taken back on refusal), so requests racing for the last tokens cannot all pass."""
        headers: dict[str, str] = {}
        added: list[str] = []
        window = self._window_index()
        for key, limit in self._scopes(principal, "tokens_per_minute"):
            count, reset = await self.counters.add(key, tokens, self.window)
            added.append(key)
            if count > limit:
                for done in added:
                    await self.counters.add(done, -tokens, self.window)
                raise self._refusal("tokens", limit, reset, needed=tokens, left=max(0, limit - (count - tokens)))
            if not headers or limit - count < int(headers["x-ratelimit-remaining-tokens"]):  # the tightest
                headers = {
                    "x-ratelimit-limit-tokens": str(limit),
                    "x-ratelimit-remaining-tokens": str(limit - count),
                    "x-ratelimit-reset-tokens": duration(reset),
                }
        return Reservation(principal, tokens if added else 0, window, headers)

    async def refund_failed(self, reservation: Reservation) -> None:
        """Give back the tokens of a request that failed before it ran (a full queue, a timeout, a model that
        cannot load, a client gone), unless their window has already ended: then they no longer count anyway.
        Shielded: a cancelled request still gives them back."""
        if reservation.tokens and reservation.window == self._window_index():
            await asyncio.shield(self._add_all(reservation.principal, -reservation.tokens))

    async def _add_all(self, principal: Principal, tokens: int) -> None:
        for key, _ in self._scopes(principal, "tokens_per_minute"):
            await self.counters.add(key, tokens, self.window)

    async def charge_tokens(self, principal: Principal, tokens: int) -> dict[str, str]:
        """Count tokens known only after the fact (a generation's completion), which may overspend a budget:
        the next request is refused until the window ends."""
        headers: dict[str, str] = {}
        for key, limit in self._scopes(principal, "tokens_per_minute"):
            count, reset = await self.counters.add(key, tokens, self.window)
            headers = {
                "x-ratelimit-limit-tokens": str(limit),
                "x-ratelimit-remaining-tokens": str(max(0, limit - count)),
                "x-ratelimit-reset-tokens": duration(reset),
            }
        return headers

    def _window_index(self) -> int:
        return int(time.time() // self.window)

    @staticmethod
    def _refusal(kind: str, limit: int, reset: float, *, needed: int = 0, left: int = 0) -> RateLimited:
        if needed > limit:  # it will never fit: waiting does not help
            message = (
                f"the request needs {needed} {kind}, more than the limit of {limit} {kind} per minute; "
                "send fewer or shorter inputs"
            )
        elif needed:
            message = (
                f"rate limit reached: the request needs {needed} {kind} and {left} of the {limit} per minute are "
                f"left; retry after {math.ceil(reset)}s"
            )
        else:
            message = f"rate limit reached: {limit} {kind} per minute; retry after {math.ceil(reset)}s"
        return RateLimited(
            message,
            code=f"rate_limit_{kind}",
            headers={
                "Retry-After": str(max(1, math.ceil(reset))),
                f"x-ratelimit-limit-{kind}": str(limit),
                f"x-ratelimit-remaining-{kind}": "0",
                f"x-ratelimit-reset-{kind}": duration(reset),
            },
        )
