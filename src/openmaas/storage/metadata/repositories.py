"""Repositories: every read and write of metadata, scoped by tenant, returning domain entities."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, Select, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from openmaas.domain.entities import SYSTEM_TENANT, Dataset, Job, JobEvent, ModelVersion, RegisteredModel
from openmaas.domain.ids import now
from openmaas.domain.jobs import JobStatus, sources_of
from openmaas.domain.refs import DEFAULT_ALIAS, ModelRef
from openmaas.storage.metadata import tables as t
from openmaas.storage.metadata.leases import AttemptClaim


class AlreadyExists(Exception):
    """Raised when a unique row already exists (the service turns it into a 409)."""


def _page(rows: list[Any], limit: int) -> tuple[list[Any], bool]:
    return rows[:limit], len(rows) > limit


def _dataset(r: RowMapping) -> Dataset:
    return Dataset(
        id=r["id"],
        tenant_id=r["tenant_id"],
        name=r["name"],
        format=r["format"],
        sha256=r["sha256"],
        bytes=r["bytes"],
        rows=r["rows"],
        labels=dict(r["labels"]),
        report=dict(r["report"]),
        created_at=r["created_at"],
        kind=r["kind"],
    )


def _claim_key(conn: Connection, tenant_id: str, scope: str, idempotency: tuple[str, str], resource_id: str) -> None:
    # A duplicate key raises IntegrityError, which rolls back the caller's whole transaction: the
    # resource is created together with its key or not at all (no savepoint, which pysqlite mishandles).
    key, fingerprint = idempotency
    conn.execute(
        insert(t.idempotency_keys).values(
            tenant_id=tenant_id,
            scope=scope,
            key=key,
            fingerprint=fingerprint,
            resource_id=resource_id,
            created_at=now(),
        )
    )


def _insert_owned(
    engine: Engine, table: Table, values: dict[str, Any], scope: str, idempotency: tuple[str, str] | None
) -> None:
    """Insert a tenant's resource; with (key, fingerprint), its Idempotency-Key in the same transaction.

    Raises AlreadyExists when the key was taken meanwhile, or (without a key) when the id was."""
    try:
        with engine.begin() as conn:
            if idempotency is not None:
                _claim_key(conn, values["tenant_id"], scope, idempotency, values["id"])
            conn.execute(insert(table).values(**values))
    except IntegrityError:
        if idempotency is None:
            raise AlreadyExists(f"{scope} {values['id']!r} already exists") from None
        raise AlreadyExists(f"idempotency key {idempotency[0]!r} is already used") from None


class IdempotencyRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find(self, tenant_id: str, scope: str, key: str) -> tuple[str, str] | None:
        """(fingerprint, resource id) of the first request made with this key."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.idempotency_keys.c.fingerprint, t.idempotency_keys.c.resource_id).where(
                    t.idempotency_keys.c.tenant_id == tenant_id,
                    t.idempotency_keys.c.scope == scope,
                    t.idempotency_keys.c.key == key,
                )
            ).first()
        return (row[0], row[1]) if row else None


class DatasetRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, d: Dataset, idempotency: tuple[str, str] | None = None) -> None:
        _insert_owned(
            self.engine,
            t.datasets,
            dict(
                id=d.id,
                tenant_id=d.tenant_id,
                name=d.name,
                format=d.format,
                sha256=d.sha256,
                bytes=d.bytes,
                rows=d.rows,
                labels=d.labels,
                report=d.report,
                created_at=d.created_at,
                kind=d.kind,
            ),
            "datasets",
            idempotency,
        )

    def get(self, tenant_id: str, dataset_id: str) -> Dataset | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(t.datasets).where(t.datasets.c.id == dataset_id, t.datasets.c.tenant_id == tenant_id)
                )
                .mappings()
                .first()
            )
        return _dataset(row) if row else None

    def list(self, tenant_id: str, *, after: str | None = None, limit: int = 100) -> tuple[list[Dataset], bool]:
        query = select(t.datasets).where(t.datasets.c.tenant_id == tenant_id)
        if after:
            query = query.where(t.datasets.c.id > after)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.datasets.c.id).limit(limit + 1)).mappings().all()
        items, more = _page(list(rows), limit)
        return [_dataset(r) for r in items], more

    def delete(self, tenant_id: str, dataset_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(t.datasets).where(t.datasets.c.id == dataset_id, t.datasets.c.tenant_id == tenant_id)
            )
        return result.rowcount > 0

    def references_to(self, sha256: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(t.datasets.c.sha256 == sha256)).scalar_one())


def _job(r: RowMapping) -> Job:
    return Job(
        id=r["id"],
        tenant_id=r["tenant_id"],
        model=r["model"],
        dataset_id=r["dataset_id"],
        recipe=r["recipe"],
        hyperparameters=dict(r["hyperparameters"]),
        status=JobStatus(r["status"]),
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        reason=r["reason"],
        model_version=r["model_version"],
        metrics=dict(r["metrics"] or {}),
        cancel_requested=r["cancel_requested"],
        attempts=r["attempts"],
        priority=r["priority"],
    )


class JobRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, job: Job, idempotency: tuple[str, str] | None = None) -> None:
        _insert_owned(
            self.engine,
            t.jobs,
            dict(
                id=job.id,
                tenant_id=job.tenant_id,
                model=job.model,
                dataset_id=job.dataset_id,
                recipe=job.recipe,
                hyperparameters=job.hyperparameters,
                status=job.status.value,
                metrics={},
                cancel_requested=False,
                attempts=0,
                priority=job.priority,
                created_at=job.created_at,
            ),
            "jobs",
            idempotency,
        )

    def get(self, tenant_id: str | None, job_id: str) -> Job | None:
        """Read a job; `tenant_id=None` is for the executor and worker, which act for every tenant."""
        query = select(t.jobs).where(t.jobs.c.id == job_id)
        if tenant_id is not None:
            query = query.where(t.jobs.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _job(row) if row else None

    def list(
        self,
        tenant_id: str,
        *,
        after: str | None = None,
        limit: int = 100,
        statuses: Iterable[JobStatus] | None = None,
    ) -> tuple[list[Job], bool]:
        query = select(t.jobs).where(t.jobs.c.tenant_id == tenant_id)
        if after:
            query = query.where(t.jobs.c.id < after)
        if statuses is not None:
            query = query.where(t.jobs.c.status.in_([s.value for s in statuses]))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.jobs.c.id.desc()).limit(limit + 1)).mappings().all()
        items, more = _page(list(rows), limit)
        return [_job(r) for r in items], more

    def queued(self) -> builtins.list[tuple[str, str, int]]:
        """(id, tenant, priority) of queued jobs, oldest first: the scheduler's input."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.jobs.c.id, t.jobs.c.tenant_id, t.jobs.c.priority)
                .where(t.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(t.jobs.c.created_at, t.jobs.c.id)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def last_started_by_tenant(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.jobs.c.tenant_id, func.max(t.jobs.c.started_at))
                .where(t.jobs.c.started_at.is_not(None))
                .group_by(t.jobs.c.tenant_id)
            ).all()
        return {tenant: float(started) for tenant, started in rows}

    def running_by_tenant(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.jobs.c.tenant_id, func.count())
                .where(t.jobs.c.status == JobStatus.RUNNING.value)
                .group_by(t.jobs.c.tenant_id)
            ).all()
        return {tenant: int(count) for tenant, count in rows}

    def requeue_interrupted(self, job_id: str, reason: str, *, claim: AttemptClaim | None = None) -> bool:
        """running → queued after a clean shutdown; the attempt is given back (the job did not fail), and
        so is its lease (storage/metadata/leases.py): any process may run it next."""
        return self.transition(
            job_id,
            JobStatus.QUEUED,
            only_from=[JobStatus.RUNNING],
            claim=claim,
            reason=reason,
            attempts=t.jobs.c.attempts - 1,
            owner=None,
            lease_expires_at=None,
        )

    def note_waiting(self, job_id: str, reason: str) -> bool:
        """Record why a queued job has not started; False when it was already the reason (or the job left the
        queue)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.jobs)
                .where(
                    t.jobs.c.id == job_id,
                    t.jobs.c.status == JobStatus.QUEUED.value,
                    or_(t.jobs.c.reason.is_(None), t.jobs.c.reason != reason),
                )
                .values(reason=reason)
            )
        return result.rowcount == 1

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.jobs.c.status, func.count()).group_by(t.jobs.c.status)).all()
        counts = {status.value: 0 for status in JobStatus}
        counts.update({status: int(count) for status, count in rows})
        return counts

    def count_unfinished_for_dataset(self, tenant_id: str, dataset_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        t.jobs.c.tenant_id == tenant_id,
                        t.jobs.c.dataset_id == dataset_id,
                        t.jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                    )
                ).scalar_one()
            )

    def _transition(
        self,
        conn: Connection,
        job_id: str,
        target: JobStatus,
        values: dict[str, Any],
        only_from: Iterable[JobStatus] | None = None,
        claim: AttemptClaim | None = None,
    ) -> bool:
        sources = sources_of(target) if only_from is None else sources_of(target) & set(only_from)
        query = update(t.jobs).where(t.jobs.c.id == job_id, t.jobs.c.status.in_([s.value for s in sources]))
        if claim is not None:  # a worker's write: only while the job is still its attempt's
            query = query.where(claim.holds())
        result = conn.execute(query.values(status=target.value, **values))
        return result.rowcount == 1

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        only_from: Iterable[JobStatus] | None = None,
        claim: AttemptClaim | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set a job's state; False when the job was no longer in a state that allows it (or, with
        `claim`, no longer that attempt's: its lease was taken over)."""
        if target.is_terminal:
            values.setdefault("finished_at", now())
        with self.engine.begin() as conn:
            return self._transition(conn, job_id, target, values, only_from, claim)

    def request_cancel(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(cancel_requested=True))

    def cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(t.jobs.c.cancel_requested).where(t.jobs.c.id == job_id)).scalar_one())

    def succeed_and_register(
        self, job_id: str, metrics: dict[str, Any], version: dict[str, Any], *, claim: AttemptClaim | None = None
    ) -> ModelVersion:
        """Register the job's model version and mark it succeeded in one transaction: both or neither (neither
        when, with `claim`, the job is no longer that attempt's)."""
        with self.engine.begin() as conn:
            registered = _insert_version(conn, version)
            if not self._transition(
                conn,
                job_id,
                JobStatus.SUCCEEDED,
                {"metrics": metrics, "model_version": registered.version, "finished_at": now()},
                claim=claim,
            ):
                raise AlreadyExists(f"job {job_id} is no longer running")
            return registered

    def open_attempt_usage(self, job: Job) -> int:
        """The usage record of one attempt of a job (0 compute seconds so far): its id, for `meter_attempt`."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(t.usage_records).values(
                    tenant_id=job.tenant_id,
                    key_id=None,
                    kind="training",
                    model=job.model,
                    version=None,
                    items=0,
                    tokens=0,
                    seconds=0.0,
                    created_at=now(),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def meter_attempt(self, record_id: int, seconds: float, version: int | None = None) -> None:
        """Set the compute seconds an attempt used so far. The total replaces the last one, never adds to it:
        metering again, or after a crash, cannot count a second twice."""
        values: dict[str, Any] = {"seconds": seconds, "created_at": now()}
        if version is not None:
            values["version"] = version
        with self.engine.begin() as conn:
            conn.execute(update(t.usage_records).where(t.usage_records.c.id == record_id).values(**values))

    def add_event(self, job_id: str, type_: str, data: dict[str, Any]) -> JobEvent:
        created = now()
        with self.engine.begin() as conn:
            result = conn.execute(insert(t.job_events).values(job_id=job_id, type=type_, data=data, created_at=created))
            key = result.inserted_primary_key
            assert key is not None  # always set after a single-row INSERT
            event_id = int(key[0])
        return JobEvent(id=event_id, job_id=job_id, type=type_, data=data, created_at=created)

    def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> tuple[builtins.list[JobEvent], bool]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(t.job_events)
                    .where(t.job_events.c.job_id == job_id, t.job_events.c.id > after)
                    .order_by(t.job_events.c.id)
                    .limit(limit + 1)
                )
                .mappings()
                .all()
            )
        items, more = _page(list(rows), limit)
        return [
            JobEvent(id=r["id"], job_id=r["job_id"], type=r["type"], data=dict(r["data"]), created_at=r["created_at"])
            for r in items
        ], more


_VERSION_FIELDS = (
    "task",
    "recipe",
    "runtime",
    "labels",
    "metrics",
    "hyperparameters",
    "dataset_id",
    "dataset_sha256",
    "job_id",
    "parameter_count",
    "artifact_sha256",
    "files",
)


def _version(r: RowMapping | Mapping[str, Any], name: str, tenant_id: str, aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        model=name,
        version=r["version"],
        tenant_id=tenant_id,
        task=r["task"],
        recipe=r["recipe"],
        runtime=r["runtime"],
        labels=tuple(r["labels"]),
        metrics=dict(r["metrics"]),
        hyperparameters=dict(r["hyperparameters"]),
        dataset_id=r["dataset_id"],
        dataset_sha256=r["dataset_sha256"],
        job_id=r["job_id"],
        parameter_count=r["parameter_count"],
        artifact_sha256=r["artifact_sha256"],
        files=dict(r["files"]),
        created_at=r["created_at"],
        aliases=aliases,
    )


def _models() -> Select[Any]:
    """Registered models with their owner's name, which is how other tenants qualify a public one."""
    return select(t.registered_models, t.tenants.c.name.label("owner")).join(
        t.tenants, t.tenants.c.id == t.registered_models.c.tenant_id
    )


def _model_row(conn: Connection, tenant_id: str, name: str) -> RowMapping | None:
    return (
        conn.execute(_models().where(t.registered_models.c.tenant_id == tenant_id, t.registered_models.c.name == name))
        .mappings()
        .first()
    )


def _insert_version(conn: Connection, spec: dict[str, Any]) -> ModelVersion:
    """Create the registered model if needed, take the next version number and insert the version."""
    tenant_id, name = spec["tenant_id"], spec["model"]
    # Write first: the transaction then holds the write lock from its first statement (SQLite), and
    # "insert if missing" needs no savepoint, which pysqlite does not nest correctly.
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    conn.execute(
        dialect_insert(t.registered_models)
        .values(tenant_id=tenant_id, name=name, last_version=0, created_at=now())
        .on_conflict_do_nothing(index_elements=["tenant_id", "name"])
    )
    model_filter = and_(t.registered_models.c.tenant_id == tenant_id, t.registered_models.c.name == name)
    # The UPDATE takes the row lock that serialises concurrent registrations of one model.
    conn.execute(
        update(t.registered_models).where(model_filter).values(last_version=t.registered_models.c.last_version + 1)
    )
    row = _model_row(conn, tenant_id, name)
    assert row is not None
    values = {field: spec[field] for field in _VERSION_FIELDS}
    created = now()
    conn.execute(
        insert(t.model_versions).values(model_id=row["id"], version=row["last_version"], created_at=created, **values)
    )
    version_row = dict(values, version=row["last_version"], created_at=created)
    return _version(version_row, name, tenant_id, ())


class ModelRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register_version(self, spec: dict[str, Any]) -> ModelVersion:
        with self.engine.begin() as conn:
            return _insert_version(conn, spec)

    def _load(self, conn: Connection, row: RowMapping) -> RegisteredModel:
        aliases = {
            a["alias"]: a["version"]
            for a in conn.execute(select(t.model_aliases).where(t.model_aliases.c.model_id == row["id"])).mappings()
        }
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(number, []).append(alias)
        versions = conn.execute(
            select(t.model_versions)
            .where(t.model_versions.c.model_id == row["id"])
            .order_by(t.model_versions.c.version)
        ).mappings()
        return RegisteredModel(
            name=row["name"],
            tenant_id=row["tenant_id"],
            created_at=row["created_at"],
            public=bool(row["public"]),
            owner=row["owner"],
            aliases=aliases,
            versions=tuple(
                _version(v, row["name"], row["tenant_id"], tuple(sorted(by_version.get(v["version"], []))))
                for v in versions
            ),
        )

    def get(self, tenant_id: str, name: str) -> RegisteredModel | None:
        with self.engine.connect() as conn:
            row = _model_row(conn, tenant_id, name)
            return self._load(conn, row) if row else None

    def list(self, tenant_id: str) -> list[RegisteredModel]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                _models().where(t.registered_models.c.tenant_id == tenant_id).order_by(t.registered_models.c.name)
            ).mappings()
            return [self._load(conn, r) for r in list(rows)]

    def visible(self, tenant_id: str, owner: str, name: str) -> RegisteredModel | None:
        """`owner/name` as `tenant_id` may see it: its own, a foundation model, or another tenant's public one."""
        models = t.registered_models
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    _models().where(
                        t.tenants.c.name == owner,
                        models.c.name == name,
                        or_(models.c.public, models.c.tenant_id.in_((tenant_id, SYSTEM_TENANT))),
                    )
                )
                .mappings()
                .first()
            )
            return self._load(conn, row) if row else None

    def public_of_others(self, tenant_id: str) -> builtins.list[RegisteredModel]:
        models = t.registered_models
        with self.engine.connect() as conn:
            rows = conn.execute(
                _models()
                .where(models.c.public, models.c.tenant_id.not_in((tenant_id, SYSTEM_TENANT)))
                .order_by(t.tenants.c.name, models.c.name)
            ).mappings()
            return [self._load(conn, r) for r in list(rows)]

    def set_public(self, tenant_id: str, name: str, public: bool) -> bool:
        models = t.registered_models
        with self.engine.begin() as conn:
            result = conn.execute(
                update(models).where(models.c.tenant_id == tenant_id, models.c.name == name).values(public=public)
            )
            return result.rowcount > 0

    def resolve(self, tenant_id: str, ref: ModelRef) -> ModelVersion | None:
        """`name:3` → version 3; `name:alias` → that alias; `name` → `production` if set, else the newest.

        A qualified `owner/name` is looked up as `visible` allows; a bare name among the tenant's own."""
        model = self.visible(tenant_id, ref.owner, ref.name) if ref.owner else self.get(tenant_id, ref.name)
        if model is None or not model.versions:
            return None
        wanted: int | None = ref.version
        if ref.alias is not None:
            wanted = model.aliases.get(ref.alias)
            if wanted is None:
                return None
        elif wanted is None:
            wanted = model.aliases.get(DEFAULT_ALIAS, model.versions[-1].version)
        return next((v for v in model.versions if v.version == wanted), None)

    def set_alias(self, tenant_id: str, name: str, alias: str, version: int) -> bool:
        with self.engine.begin() as conn:
            row = _model_row(conn, tenant_id, name)
            if row is None:
                return False
            exists = conn.execute(
                select(t.model_versions.c.id).where(
                    t.model_versions.c.model_id == row["id"], t.model_versions.c.version == version
                )
            ).first()
            if exists is None:
                return False
            conn.execute(
                delete(t.model_aliases).where(t.model_aliases.c.model_id == row["id"], t.model_aliases.c.alias == alias)
            )
            conn.execute(insert(t.model_aliases).values(model_id=row["id"], alias=alias, version=version))
            return True

    def delete_alias(self, tenant_id: str, name: str, alias: str) -> bool:
        with self.engine.begin() as conn:
            row = _model_row(conn, tenant_id, name)
            if row is None:
                return False
            result = conn.execute(
                delete(t.model_aliases).where(t.model_aliases.c.model_id == row["id"], t.model_aliases.c.alias == alias)
            )
            return result.rowcount > 0

    def delete_version(self, tenant_id: str, name: str, version: int) -> ModelVersion | None:
        with self.engine.begin() as conn:
            row = _model_row(conn, tenant_id, name)
            if row is None:
                return None
            version_row = (
                conn.execute(
                    select(t.model_versions).where(
                        t.model_versions.c.model_id == row["id"], t.model_versions.c.version == version
                    )
                )
                .mappings()
                .first()
            )
            if version_row is None:
                return None
            conn.execute(
                delete(t.model_aliases).where(
                    t.model_aliases.c.model_id == row["id"], t.model_aliases.c.version == version
                )
            )
            conn.execute(delete(t.model_versions).where(t.model_versions.c.id == version_row["id"]))
            return _version(version_row, name, tenant_id, ())

    def delete_model(self, tenant_id: str, name: str) -> RegisteredModel | None:
        with self.engine.begin() as conn:
            row = _model_row(conn, tenant_id, name)
            if row is None:
                return None
            model = self._load(conn, row)
            conn.execute(delete(t.model_aliases).where(t.model_aliases.c.model_id == row["id"]))
            conn.execute(delete(t.model_versions).where(t.model_versions.c.model_id == row["id"]))
            conn.execute(delete(t.registered_models).where(t.registered_models.c.id == row["id"]))
            return model

    def blobs_in_use(self, sha256s: Collection[str]) -> set[str]:
        """Which of these file blobs some registered version still lists (versions share tokenizers, weights...)."""
        wanted = set(sha256s)
        used: set[str] = set()
        with self.engine.connect() as conn:
            for (files,) in conn.execute(select(t.model_versions.c.files)):
                used.update(wanted.intersection(files.values()))
        return used
