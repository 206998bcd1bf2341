"""Job leases: which process runs a job's attempt, claimed, renewed, handed back and taken over atomically.

Several API processes, on one host or many, may share one database. A process claims a queued job with one
conditional UPDATE (of two processes claiming the same job, one wins), renews its lease while the attempt
runs, and another process takes the job over only once the lease expired (or its owner is known to be gone).
Lease times are read from the database's clock, so hosts whose clocks disagree still agree on expiry.

A worker running an attempt writes its outcome only while the job is still its attempt's (`AttemptClaim`: the
lease's owner and the attempt's number when it started): one whose lease was taken over, and whose job another
process runs again, can no longer overwrite the job's state, and stops at its next step boundary.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Float, and_, func, or_, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from openmaas.domain.ids import now
from openmaas.domain.jobs import JobStatus
from openmaas.storage.metadata import tables as t


class db_now(FunctionElement[float]):  # noqa: N801 (named like the SQL functions it stands for)
    """The database's clock, as unix seconds."""

    type = Float()
    inherit_cache = True


@compiles(db_now, "postgresql")
def _postgres_now(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    # clock_timestamp(), not now(): now() is the transaction's start, which a long transaction would age.
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(db_now, "sqlite")
def _sqlite_now(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"  # Julian day of the unix epoch; millisecond precision


@dataclass(frozen=True)
class Lease:
    """A running job's claim as another process sees it."""

    job_id: str
    owner: str | None
    expired: bool
    cancel_requested: bool


@dataclass(frozen=True)
class AttemptClaim:
    """The attempt a worker runs: its job, the lease's owner and the attempt's number when it started."""

    job_id: str
    owner: str | None
    attempt: int

    def holds(self) -> Any:
        """The condition, on a jobs row, that the job is still running this attempt."""
        owner = _jobs.c.owner.is_(None) if self.owner is None else _jobs.c.owner == self.owner
        return and_(_jobs.c.id == self.job_id, _jobs.c.status == _RUNNING, owner, _jobs.c.attempts == self.attempt)


_jobs = t.jobs
_RUNNING = JobStatus.RUNNING.value


class LeaseRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, job_id: str, owner: str, lease_s: float, *, tenant_limit: int | None = None) -> bool:
        """queued → running for `owner`, counting the attempt, with a lease of `lease_s` seconds. With
        `tenant_limit`, only while the job's tenant runs fewer jobs than that, counted across processes."""
        query = update(_jobs).where(_jobs.c.id == job_id, _jobs.c.status == JobStatus.QUEUED.value)
        with self.engine.begin() as conn:
            if tenant_limit is not None:
                if conn.dialect.name == "postgresql":
                    # Claims for one tenant's jobs take turns on its row, so each one's count below sees the
                    # claims committed before it (READ COMMITTED: every statement reads afresh). SQLite needs
                    # no lock: its UPDATE holds the write lock from before it reads.
                    tenant = select(_jobs.c.tenant_id).where(_jobs.c.id == job_id).scalar_subquery()
                    conn.execute(select(t.tenants.c.id).where(t.tenants.c.id == tenant).with_for_update())
                others = _jobs.alias("others")
                running = (
                    select(func.count())
                    .where(others.c.tenant_id == _jobs.c.tenant_id, others.c.status == _RUNNING)
                    .scalar_subquery()
                )
                query = query.where(running < tenant_limit)
            result = conn.execute(
                query.values(
                    status=_RUNNING,
                    started_at=now(),
                    attempts=_jobs.c.attempts + 1,
                    owner=owner,
                    lease_expires_at=db_now() + lease_s,
                )
            )
        return result.rowcount == 1

    def renew(self, owner: str, job_ids: Collection[str], lease_s: float) -> dict[str, bool]:
        """Extend `owner`'s leases on these jobs. Returns the ones it still holds, each with whether a cancel
        was requested; a job left out is no longer its to run (it ended, went back to the queue, or another
        process took it over)."""
        if not job_ids:
            return {}
        held = and_(_jobs.c.id.in_(job_ids), _jobs.c.owner == owner, _jobs.c.status == _RUNNING)
        with self.engine.begin() as conn:
            conn.execute(update(_jobs).where(held).values(lease_expires_at=db_now() + lease_s))
            rows = conn.execute(select(_jobs.c.id, _jobs.c.cancel_requested).where(held)).all()
        return {row[0]: bool(row[1]) for row in rows}

    def attempt_claim(self, job_id: str) -> AttemptClaim | None:
        """The running job's attempt as it is now (read by its worker when it starts); None unless running."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_jobs.c.owner, _jobs.c.attempts).where(_jobs.c.id == job_id, _jobs.c.status == _RUNNING)
            ).first()
        return AttemptClaim(job_id, row[0], int(row[1])) if row is not None else None

    def still_held(self, claim: AttemptClaim) -> tuple[bool, bool]:
        """Whether the job still runs this attempt, and whether a cancel was requested."""
        with self.engine.connect() as conn:
            query = select(claim.holds(), _jobs.c.cancel_requested).where(_jobs.c.id == claim.job_id)
            row = conn.execute(query).first()
        return (bool(row[0]), bool(row[1])) if row is not None else (False, False)

    def running(self) -> builtins.list[Lease]:
        """Every running job's lease, and whether it expired by the database's clock (no lease: expired)."""
        expired = or_(_jobs.c.lease_expires_at.is_(None), _jobs.c.lease_expires_at < db_now())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_jobs.c.id, _jobs.c.owner, expired, _jobs.c.cancel_requested)
                .where(_jobs.c.status == _RUNNING)
                .order_by(_jobs.c.id)
            ).all()
        return [Lease(row[0], row[1], bool(row[2]), bool(row[3])) for row in rows]

    def take_over(self, lease: Lease, target: JobStatus, reason: str, *, owner_gone: bool = False) -> bool:
        """Move a job another process ran to `target` (back to the queue, or cancelled), only if that process
        still holds it and its lease expired (or, with `owner_gone`, whatever the lease: its owner is known to
        be dead). The attempt is given back when it is queued again: the owner's death is not the job's fault."""
        assert target in (JobStatus.QUEUED, JobStatus.CANCELLED)
        owner = _jobs.c.owner.is_(None) if lease.owner is None else _jobs.c.owner == lease.owner
        query = update(_jobs).where(_jobs.c.id == lease.job_id, _jobs.c.status == _RUNNING, owner)
        if not owner_gone:
            query = query.where(or_(_jobs.c.lease_expires_at.is_(None), _jobs.c.lease_expires_at < db_now()))
        values: dict[str, Any] = {"status": target.value, "reason": reason, "owner": None, "lease_expires_at": None}
        if target is JobStatus.QUEUED:
            values["attempts"] = _jobs.c.attempts - 1
        else:
            values["finished_at"] = now()
        with self.engine.begin() as conn:
            return conn.execute(query.values(**values)).rowcount == 1

    def release(self, job_id: str, owner: str, target: JobStatus, reason: str) -> bool:
        """The owner records an outcome its attempt did not (retry, failure or cancel), only while it still
        holds the job: a process whose job was taken over never touches the new attempt."""
        assert target in (JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED)
        values: dict[str, Any] = {"status": target.value, "reason": reason, "owner": None, "lease_expires_at": None}
        if target.is_terminal:
            values["finished_at"] = now()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(_jobs)
                .where(_jobs.c.id == job_id, _jobs.c.status == _RUNNING, _jobs.c.owner == owner)
                .values(**values)
            )
        return result.rowcount == 1
