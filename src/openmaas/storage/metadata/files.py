"""FileRepository: the rows of OpenAI's files, per tenant, paged by id in either order."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Engine, RowMapping, delete, func, insert, select

from openmaas.domain.entities import File
from openmaas.storage.metadata import tables as t


def _file(r: RowMapping) -> File:
    return File(
        id=r["id"],
        tenant_id=r["tenant_id"],
        filename=r["filename"],
        purpose=r["purpose"],
        sha256=r["sha256"],
        bytes=r["bytes"],
        created_at=r["created_at"],
    )


class FileRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, f: File) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.files).values(
                    id=f.id,
                    tenant_id=f.tenant_id,
                    filename=f.filename,
                    purpose=f.purpose,
                    sha256=f.sha256,
                    bytes=f.bytes,
                    created_at=f.created_at,
                )
            )

    def get(self, tenant_id: str, file_id: str) -> File | None:
        query = select(t.files).where(t.files.c.id == file_id, t.files.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _file(row) if row else None

    def list(
        self,
        tenant_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 100,
        order: Literal["asc", "desc"] = "desc",
    ) -> tuple[list[File], bool]:
        # Ids begin with their creation time (domain/ids.py), so id order is creation order.
        query = select(t.files).where(t.files.c.tenant_id == tenant_id)
        if purpose is not None:
            query = query.where(t.files.c.purpose == purpose)
        if after:
            query = query.where(t.files.c.id < after if order == "desc" else t.files.c.id > after)
        by = t.files.c.id.desc() if order == "desc" else t.files.c.id.asc()
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(by).limit(limit + 1)).mappings().all()
        return [_file(r) for r in rows[:limit]], len(rows) > limit

    def delete(self, tenant_id: str, file_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(t.files).where(t.files.c.id == file_id, t.files.c.tenant_id == tenant_id))
        return result.rowcount > 0

    def references_to(self, sha256: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(t.files.c.sha256 == sha256)).scalar_one())

    def stored_bytes(self, tenant_id: str) -> int:
        query = select(func.coalesce(func.sum(t.files.c.bytes), 0)).where(t.files.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
