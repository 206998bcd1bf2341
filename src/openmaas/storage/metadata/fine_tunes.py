"""FineTuneRepository: OpenAI's face of training jobs (one row per job created through /v1/fine_tuning/jobs).

While a fine-tune's files are validated, the validating process holds a lease on it (renewed while it works,
read by the database's clock, as a batch's): after a crash, another process, or the restarted one, takes it over
and validates again; of two processes claiming one, one wins."""

from __future__ import annotations

import builtins
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine, RowMapping, insert, or_, select, update

from openmaas.domain.entities import FineTune
from openmaas.storage.metadata import tables as t
from openmaas.storage.metadata.leases import db_now

VALIDATING = "validating_files"


def _fine_tune(r: RowMapping) -> FineTune:
    return FineTune(
        job_id=r["job_id"],
        tenant_id=r["tenant_id"],
        base_model=r["base_model"],
        training_file=r["training_file"],
        suffix=r["suffix"],
        seed=r["seed"],
        metadata=dict(r["metadata"]) if r["metadata"] is not None else None,
        hyperparameters=dict(r["hyperparameters"]),
        result_file=r["result_file"],
        created_at=r["created_at"],
        status=r["status"],
        error=dict(r["error"]) if r["error"] is not None else None,
        report=dict(r["report"]) if r["report"] is not None else None,
        validation_file=r["validation_file"],
    )


class FineTuneRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, fine_tune: FineTune, *, owner: str | None = None, lease_s: float = 0.0) -> None:
        """Record the fine-tune; one still validating its files is `owner`'s for `lease_s` seconds."""
        values: dict[str, Any] = asdict(fine_tune)
        if owner is not None:
            values.update(owner=owner, lease_expires_at=db_now() + lease_s)
        with self.engine.begin() as conn:
            conn.execute(insert(t.fine_tunes).values(**values))

    def claim(self, job_id: str, owner: str, lease_s: float, *, take_from: str | None = None) -> bool:
        """Hold (or renew) the lease on a fine-tune validating its files, for `owner`: only if no process holds
        it, `owner` does, or its holder's lease expired; with `take_from`, also from that holder whatever its
        lease (it is known to be dead)."""
        f = t.fine_tunes
        free = or_(f.c.owner.is_(None), f.c.owner == owner, f.c.lease_expires_at < db_now())
        if take_from is not None:
            free = or_(free, f.c.owner == take_from)
        query = update(f).where(f.c.job_id == job_id, f.c.status == VALIDATING, free)
        with self.engine.begin() as conn:
            result = conn.execute(query.values(owner=owner, lease_expires_at=db_now() + lease_s))
        return result.rowcount == 1

    def validating(self) -> builtins.list[tuple[FineTune, str | None]]:
        """Every fine-tune (of any tenant) whose files are being validated, with the process that holds it."""
        query = select(t.fine_tunes).where(t.fine_tunes.c.status == VALIDATING).order_by(t.fine_tunes.c.job_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [(_fine_tune(r), r["owner"]) for r in rows]

    def get(self, tenant_id: str, job_id: str) -> FineTune | None:
        query = select(t.fine_tunes).where(t.fine_tunes.c.job_id == job_id, t.fine_tunes.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _fine_tune(row) if row else None

    def list(self, tenant_id: str, *, after: str | None, limit: int) -> tuple[list[FineTune], bool]:
        """Newest first, as OpenAI lists them (job ids begin with their creation time)."""
        query = select(t.fine_tunes).where(t.fine_tunes.c.tenant_id == tenant_id)
        if after:
            query = query.where(t.fine_tunes.c.job_id < after)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.fine_tunes.c.job_id.desc()).limit(limit + 1)).mappings().all()
        return [_fine_tune(r) for r in rows[:limit]], len(rows) > limit

    def validated(
        self, job_id: str, *, report: dict[str, Any] | None, error: dict[str, Any] | None, owner: str | None = None
    ) -> bool:
        """End validation: with `error`, the fine-tune failed; else its job exists now (status null). With
        `owner`, only while that process holds it. False: it was no longer validating, or no longer `owner`'s."""
        f = t.fine_tunes
        values: dict[str, Any] = {"report": report, "status": "failed" if error else None, "error": error}
        query = update(f).where(f.c.job_id == job_id, f.c.status == VALIDATING)
        if owner is not None:
            query = query.where(f.c.owner == owner)
        with self.engine.begin() as conn:
            result = conn.execute(query.values(**values, owner=None, lease_expires_at=None))
        return result.rowcount > 0

    def measured(self, recipe: str, limit: int = 20) -> builtins.list[dict[str, Any]]:
        """What the newest succeeded fine-tunes of `recipe` (any tenant: the speed is this machine's) report and
        measured: their data report, the job's metrics, and its start and finish times."""
        jobs, tunes = t.jobs, t.fine_tunes
        query = (
            select(tunes.c.report, jobs.c.metrics, jobs.c.started_at, jobs.c.finished_at)
            .join(jobs, jobs.c.id == tunes.c.job_id)
            .where(jobs.c.recipe == recipe, jobs.c.status == "succeeded", tunes.c.report.is_not(None))
            .order_by(jobs.c.finished_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    def set_result_file(self, job_id: str, file_id: str) -> bool:
        """Record the job's results file unless one was recorded meanwhile (then False: use that one)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.fine_tunes)
                .where(t.fine_tunes.c.job_id == job_id, t.fine_tunes.c.result_file.is_(None))
                .values(result_file=file_id)
            )
        return result.rowcount > 0
