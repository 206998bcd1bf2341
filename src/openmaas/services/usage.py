"""Usage metering: every inference call and training job leaves a durable record; summaries by model, key, day.

Inference records are written with group commit: a request waits until its record is in the database
before it is answered, and one transaction carries the records of all requests that arrived meanwhile. So a
SIGKILL loses no answered call, and the hot path does not pay a transaction per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from openmaas.domain.entities import Principal, UsageRecord
from openmaas.domain.ids import now
from openmaas.errors import InvalidRequest, PermissionDenied
from openmaas.storage.metadata.tenancy import UsageRepository

log = logging.getLogger(__name__)
GROUPS = ("model", "key", "day", "tenant")


class UsageRecorder:
    def __init__(self, usage: UsageRepository) -> None:
        self.usage = usage
        self._pending: list[tuple[UsageRecord, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def record(
        self,
        principal: Principal,
        *,
        model: str,
        version: int,
        items: int,
        tokens: int,
        seconds: float,
        completion_tokens: int = 0,
    ) -> None:
        entry = UsageRecord(
            principal.tenant_id,
            principal.key_id,
            "inference",
            model,
            version,
            items,
            tokens,
            seconds,
            now(),
            completion_tokens,
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="usage-recorder")
        self._wake.set()
        await asyncio.shield(future)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Everything that arrived while the previous commit ran goes into this one: a lone request
            # never waits for company, and under load one transaction carries many records.
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await asyncio.to_thread(self.usage.add_many, [record for record, _ in batch])
            except Exception as error:  # the requests fail rather than go unmetered
                log.exception("writing %d usage records failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class UsageService:
    def __init__(self, usage: UsageRepository) -> None:
        self.usage = usage

    def summary(
        self,
        principal: Principal,
        *,
        start: float | None,
        end: float | None,
        group_by: str | None,
        all_tenants: bool,
    ) -> list[dict[str, Any]]:
        if group_by is not None and group_by not in GROUPS:
            raise InvalidRequest(f"group_by must be one of {', '.join(GROUPS)}", param="group_by")
        if all_tenants and not principal.is_admin:
            raise PermissionDenied("usage across tenants needs an admin key", param="tenant")
        return self.usage.summary(None if all_tenants else principal.tenant_id, start, end, group_by)
