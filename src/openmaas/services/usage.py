"""Usage metering: every inference call and training job leaves a durable record; summaries by model, key, day.

An inference record is appended to this process's journal (storage/usage_journal.py) before the request is
answered, and a background task moves the journal into the database every `drain_seconds`, all records
since the last time in one transaction. So a SIGKILL loses no answered call (the next start adopts the
journal), and the hot path pays one `write` instead of a transaction. A summary first drains this
process's journal, so it counts every call this process answered; another process's calls appear within
its drain interval. A drain also adopts, at most every `ADOPT_EVERY_S`, the journals of processes that died
beside this one (`openmaas serve --workers N`), so their answered calls reach the database without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from openmaas.domain.entities import Principal, UsageRecord
from openmaas.domain.ids import now
from openmaas.errors import InvalidRequest, PermissionDenied
from openmaas.failpoints import failpoint
from openmaas.storage.metadata.tenancy import UsageRepository
from openmaas.storage.usage_journal import Segment, UsageJournal

log = logging.getLogger(__name__)
GROUPS = ("model", "key", "day", "tenant", "protocol")
ADOPT_EVERY_S = 2.0


class UsageRecorder:
    def __init__(self, usage: UsageRepository, journal: UsageJournal, drain_seconds: float = 0.2) -> None:
        self.usage = usage
        self.journal = journal
        self.drain_seconds = drain_seconds
        self._sealed: list[Segment] = []  # sealed but not committed yet (a failed commit is retried)
        self._drain_lock = threading.Lock()  # drains run on worker threads: the loop's, and summaries'
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._adopted_at = time.monotonic()

    def recover(self) -> int:
        """Commit what processes that died left in their journals; returns how many records that was."""
        recovered = 0
        for orphan in self.journal.orphans():
            for segment in orphan.segments:
                if self.usage.add_journaled(orphan.journal, segment.sequence, segment.records):
                    recovered += len(segment.records)
                self.journal.discard(segment)
            self.usage.forget_journal(orphan.journal)
            self.journal.release(orphan)
        if recovered:
            log.info("recovered %d usage records from the journals of stopped processes", recovered)
        return recovered

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
        protocol: str | None = None,
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
            protocol,
        )
        self.journal.append(entry)  # raises rather than answer a call that left no record
        if self._task is None:
            self._task = asyncio.create_task(self._drain_loop(), name="usage-drain")
        self._wake.set()

    async def _drain_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.drain_seconds)  # let records gather: one transaction carries them all
            self._wake.clear()
            try:
                await asyncio.to_thread(self.drain)
            except Exception:  # the records stay in the journal; the next drain retries them
                log.exception("moving usage records to the database failed; will retry")
                self._wake.set()

    def drain(self) -> None:
        """Commit every record journaled so far, in order; safe from any thread."""
        with self._drain_lock:
            if time.monotonic() - self._adopted_at >= ADOPT_EVERY_S:
                self._adopted_at = time.monotonic()
                self.recover()
            segment = self.journal.seal()
            if segment is not None:
                self._sealed.append(segment)
            while self._sealed:
                segment = self._sealed[0]
                self.usage.add_journaled(segment.journal, segment.sequence, segment.records)
                failpoint("usage_after_commit")
                self.journal.discard(segment)
                self._sealed.pop(0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.to_thread(self.drain)
            self.usage.forget_journal(self.journal.id)
        except Exception:  # left on disk: the next start commits it
            log.exception("could not move the last usage records to the database; the next start will")
        self.journal.close()


class UsageService:
    def __init__(self, usage: UsageRepository, recorder: UsageRecorder) -> None:
        self.usage = usage
        self.recorder = recorder

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
        self.recorder.drain()
        return self.usage.summary(None if all_tenants else principal.tenant_id, start, end, group_by)
