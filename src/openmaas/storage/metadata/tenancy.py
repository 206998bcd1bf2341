"""Repositories for tenants, API keys, usage records and the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Engine, RowMapping, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from openmaas.domain.entities import ApiKey, AuditEntry, Tenant, UsageRecord
from openmaas.domain.ids import now
from openmaas.storage.metadata import tables as t
from openmaas.storage.metadata.repositories import AlreadyExists


def _tenant(r: RowMapping) -> Tenant:
    return Tenant(r["id"], r["name"], dict(r["limits"] or {}), bool(r["disabled"]), r["created_at"])


def _key(r: RowMapping) -> ApiKey:
    return ApiKey(
        id=r["id"],
        tenant_id=r["tenant_id"],
        prefix=r["prefix"],
        scopes=tuple(r["scopes"]),
        created_at=r["created_at"],
        revoked=bool(r["revoked"]),
        expires_at=r["expires_at"],
        limits=dict(r["limits"] or {}),
    )


class TenantRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, tenant: Tenant) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t.tenants).values(
                        id=tenant.id,
                        name=tenant.name,
                        limits=tenant.limits,
                        disabled=tenant.disabled,
                        created_at=tenant.created_at,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a tenant named {tenant.name!r} exists") from None

    def ensure(self, tenant_id: str, name: str) -> None:
        """Create a built-in tenant (`default`, the system tenant) unless it exists."""
        with self.engine.begin() as conn:
            if conn.execute(select(t.tenants.c.id).where(t.tenants.c.id == tenant_id)).first() is None:
                conn.execute(
                    insert(t.tenants).values(id=tenant_id, name=name, limits={}, disabled=False, created_at=now())
                )

    def get(self, tenant_id: str) -> Tenant | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.tenants).where(t.tenants.c.id == tenant_id)).mappings().first()
        return _tenant(row) if row else None

    def all(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            return [_tenant(r) for r in conn.execute(select(t.tenants).order_by(t.tenants.c.created_at)).mappings()]

    def update(self, tenant_id: str, **values: Any) -> Tenant | None:
        with self.engine.begin() as conn:
            conn.execute(update(t.tenants).where(t.tenants.c.id == tenant_id).values(**values))
        return self.get(tenant_id)

    def limits_by_tenant(self) -> dict[str, dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.tenants.c.id, t.tenants.c.limits)).all()
        return {tenant_id: dict(limits or {}) for tenant_id, limits in rows}


class ApiKeyRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, key: ApiKey, key_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.api_keys).values(
                    id=key.id,
                    tenant_id=key.tenant_id,
                    prefix=key.prefix,
                    hash=key_hash,
                    scopes=list(key.scopes),
                    created_at=key.created_at,
                    expires_at=key.expires_at,
                    limits=key.limits,
                    revoked=key.revoked,
                )
            )

    def has_hash(self, key_hash: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(t.api_keys.c.id).where(t.api_keys.c.hash == key_hash)).first() is not None

    def for_tenant(self, tenant_id: str) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.api_keys).where(t.api_keys.c.tenant_id == tenant_id).order_by(t.api_keys.c.created_at)
            ).mappings()
            return [_key(r) for r in rows]

    def get(self, key_id: str) -> ApiKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).mappings().first()
        return _key(row) if row else None

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(t.api_keys).where(t.api_keys.c.id == key_id).values(revoked=True)).rowcount > 0

    def by_hash(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        """The key with this hash and its tenant: what authentication needs."""
        query = (
            select(
                t.api_keys,
                t.tenants.c.name,
                t.tenants.c.limits.label("tenant_limits"),
                t.tenants.c.disabled,
                t.tenants.c.created_at.label("tenant_created"),
            )
            .join(t.tenants, t.tenants.c.id == t.api_keys.c.tenant_id)
            .where(t.api_keys.c.hash == key_hash)
        )
        with self.engine.connect() as conn:
            r = conn.execute(query).mappings().first()
        if r is None:
            return None
        tenant = Tenant(
            r["tenant_id"], r["name"], dict(r["tenant_limits"] or {}), bool(r["disabled"]), r["tenant_created"]
        )
        return _key(r), tenant


class UsageRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_many(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        with self.engine.begin() as conn:
            conn.execute(insert(t.usage_records), [vars(r) for r in records])

    def add_journaled(self, journal: str, sequence: int, records: Sequence[UsageRecord]) -> bool:
        """Insert a journal segment's records unless that segment (or a later one) was applied before.

        Segments of one journal arrive in order, from the one process that holds its lock. Returns whether
        the records were inserted."""
        j = t.usage_journals
        with self.engine.begin() as conn:
            applied = conn.execute(select(j.c.applied).where(j.c.journal == journal)).scalar()
            if applied is not None and sequence <= applied:
                return False
            if records:
                conn.execute(insert(t.usage_records), [vars(r) for r in records])
            if applied is None:
                conn.execute(insert(j).values(journal=journal, applied=sequence, updated_at=now()))
            else:
                conn.execute(update(j).where(j.c.journal == journal).values(applied=sequence, updated_at=now()))
        return True

    def forget_journal(self, journal: str) -> None:
        """Drop a journal's mark once none of its segments is left on disk."""
        with self.engine.begin() as conn:
            conn.execute(delete(t.usage_journals).where(t.usage_journals.c.journal == journal))

    def summary(
        self, tenant_id: str | None, start: float | None, end: float | None, group_by: str | None
    ) -> list[dict[str, Any]]:
        u = t.usage_records
        columns_by_group: dict[str | None, list[ColumnElement[Any]]] = {
            "model": [u.c.model],
            "key": [u.c.key_id],
            "day": [func.floor(u.c.created_at / 86400).label("day")],
            "tenant": [u.c.tenant_id],
            "protocol": [u.c.protocol],
            None: [],
        }
        columns = columns_by_group[group_by]
        query = select(
            *columns,
            func.count().label("records"),
            func.coalesce(func.sum(u.c["items"]), 0).label("items"),
            func.coalesce(func.sum(u.c.tokens), 0).label("tokens"),
            func.coalesce(func.sum(u.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(u.c.seconds), 0.0).label("seconds"),
            u.c.kind,
        ).group_by(*columns, u.c.kind)
        if tenant_id is not None:
            query = query.where(u.c.tenant_id == tenant_id)
        if start is not None:
            query = query.where(u.c.created_at >= start)
        if end is not None:
            query = query.where(u.c.created_at < end)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def stored_bytes(self, tenant_id: str) -> int:
        """What counts against the tenant's `storage_bytes`: its datasets and its files."""
        datasets = select(func.coalesce(func.sum(t.datasets.c.bytes), 0)).where(t.datasets.c.tenant_id == tenant_id)
        files = select(func.coalesce(func.sum(t.files.c.bytes), 0)).where(t.files.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return int(conn.execute(datasets).scalar_one()) + int(conn.execute(files).scalar_one())


class AuditRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, tenant_id: str, key_id: str | None, action: str, target: str, details: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.audit_log).values(
                    tenant_id=tenant_id,
                    key_id=key_id,
                    action=action,
                    target=target,
                    details=details,
                    created_at=now(),
                )
            )

    def entries(self, limit: int = 1000) -> list[AuditEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)).mappings()
            return [
                AuditEntry(
                    r["id"], r["tenant_id"], r["key_id"], r["action"], r["target"], dict(r["details"]), r["created_at"]
                )
                for r in rows
            ]
