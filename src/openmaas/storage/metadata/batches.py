"""BatchRepository: OpenAI's batches, their lines and their leases. A line's answer is written once, with the
batch's counts in the same transaction, so a process that dies mid-batch leaves each line answered or not, never
twice; a batch is run by the one process holding its lease (as jobs are: storage/metadata/leases.py)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine, RowMapping, insert, or_, select, update

from openmaas.domain.entities import Batch, BatchLine
from openmaas.storage.metadata import tables as t
from openmaas.storage.metadata.leases import db_now

# What the background runner picks up: batches answering their lines, being cancelled, or writing their files.
ACTIVE = ("in_progress", "cancelling", "finalizing")


def _batch(r: RowMapping) -> Batch:
    return Batch(
        id=r["id"],
        tenant_id=r["tenant_id"],
        endpoint=r["endpoint"],
        input_file_id=r["input_file_id"],
        completion_window=r["completion_window"],
        status=r["status"],
        created_at=r["created_at"],
        metadata=dict(r["metadata"]) if r["metadata"] is not None else None,
        times=dict(r["times"]),
        output_file_id=r["output_file_id"],
        error_file_id=r["error_file_id"],
        total=r["total"],
        completed=r["completed"],
        failed=r["failed"],
        errors=list(r["errors"]) if r["errors"] is not None else None,
    )


def _line(r: RowMapping) -> BatchLine:
    return BatchLine(
        batch_id=r["batch_id"],
        line=r["line"],
        custom_id=r["custom_id"],
        url=r["url"],
        body=dict(r["body"]),
        status_code=r["status_code"],
        response=dict(r["response"]) if r["response"] is not None else None,
    )


class BatchRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, batch: Batch, lines: Sequence[BatchLine]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(t.batches).values(**asdict(batch)))
            if lines:
                conn.execute(insert(t.batch_lines), [asdict(line) for line in lines])

    def get(self, tenant_id: str | None, batch_id: str) -> Batch | None:
        query = select(t.batches).where(t.batches.c.id == batch_id)
        if tenant_id is not None:
            query = query.where(t.batches.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _batch(row) if row else None

    def list(self, tenant_id: str, *, after: str | None, limit: int) -> tuple[builtins.list[Batch], bool]:
        """Newest first (ids begin with their creation time)."""
        query = select(t.batches).where(t.batches.c.tenant_id == tenant_id)
        if after:
            query = query.where(t.batches.c.id < after)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.batches.c.id.desc()).limit(limit + 1)).mappings().all()
        return [_batch(r) for r in rows[:limit]], len(rows) > limit

    def active(self) -> builtins.list[Batch]:
        query = select(t.batches).where(t.batches.c.status.in_(ACTIVE)).order_by(t.batches.c.id)
        with self.engine.connect() as conn:
            return [_batch(r) for r in conn.execute(query).mappings().all()]

    def pending(self, batch_id: str, limit: int) -> builtins.list[BatchLine]:
        query = (
            select(t.batch_lines)
            .where(t.batch_lines.c.batch_id == batch_id, t.batch_lines.c.status_code.is_(None))
            .order_by(t.batch_lines.c.line)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_line(r) for r in conn.execute(query).mappings().all()]

    def lines(self, batch_id: str) -> builtins.list[BatchLine]:
        query = select(t.batch_lines).where(t.batch_lines.c.batch_id == batch_id).order_by(t.batch_lines.c.line)
        with self.engine.connect() as conn:
            return [_line(r) for r in conn.execute(query).mappings().all()]

    def answer(self, batch_id: str, line: int, status_code: int, response: dict[str, Any]) -> bool:
        """Record a line's answer unless it has one; count it as completed (2xx) or failed. False: it had one."""
        lines, batches = t.batch_lines, t.batches
        with self.engine.begin() as conn:
            done = conn.execute(
                update(lines)
                .where(lines.c.batch_id == batch_id, lines.c.line == line, lines.c.status_code.is_(None))
                .values(status_code=status_code, response=response)
            )
            if done.rowcount == 0:
                return False
            counter = batches.c.completed if status_code < 300 else batches.c.failed
            conn.execute(update(batches).where(batches.c.id == batch_id).values({counter: counter + 1}))
        return True

    def claim(self, batch_id: str, owner: str, lease_s: float, *, take_from: str | None = None) -> bool:
        """Hold (or renew) the lease on an active batch for `owner`: only if no process holds it, `owner` does, or
        its holder's lease expired (by the database's clock); with `take_from`, also from that holder whatever
        its lease (it is known to be dead). Of two processes claiming one batch, one wins."""
        b = t.batches
        free = or_(b.c.owner.is_(None), b.c.owner == owner, b.c.lease_expires_at < db_now())
        if take_from is not None:
            free = or_(free, b.c.owner == take_from)
        query = update(b).where(b.c.id == batch_id, b.c.status.in_(ACTIVE), free)
        with self.engine.begin() as conn:
            result = conn.execute(query.values(owner=owner, lease_expires_at=db_now() + lease_s))
        return result.rowcount == 1

    def owner_of(self, batch_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.batches.c.owner).where(t.batches.c.id == batch_id)).scalar_one_or_none()

    def set_status(self, batch_id: str, status: str, *, only_from: Sequence[str], at: float, **values: Any) -> bool:
        """Move the batch to `status` if it is in one of `only_from`, stamping `{status}_at`."""
        with self.engine.begin() as conn:
            row = conn.execute(select(t.batches.c.times, t.batches.c.status).where(t.batches.c.id == batch_id)).first()
            if row is None or row.status not in only_from:
                return False
            times = {**dict(row.times), f"{status}_at": at}
            if status not in ACTIVE:  # an ended batch is no process's to run
                values = {**values, "owner": None, "lease_expires_at": None}
            result = conn.execute(
                update(t.batches)
                .where(t.batches.c.id == batch_id, t.batches.c.status == row.status)
                .values(status=status, times=times, **values)
            )
        return result.rowcount > 0
