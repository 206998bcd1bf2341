"""FineTuneRepository: OpenAI's face of training jobs (one row per job created through /v1/fine_tuning/jobs)."""

from __future__ import annotations

import builtins
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine, RowMapping, insert, select, update

from openmaas.domain.entities import FineTune
from openmaas.storage.metadata import tables as t


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

    def add(self, fine_tune: FineTune) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(t.fine_tunes).values(**asdict(fine_tune)))

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

    def validated(self, job_id: str, *, report: dict[str, Any] | None, error: dict[str, Any] | None) -> bool:
        """End validation: with `error`, the fine-tune failed; else its job exists now (status null). False: it
        was no longer validating."""
        values: dict[str, Any] = {"report": report, "status": "failed" if error else None, "error": error}
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.fine_tunes)
                .where(t.fine_tunes.c.job_id == job_id, t.fine_tunes.c.status == "validating_files")
                .values(**values)
            )
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
