"""Opens the metadata database (SQLite in WAL mode or Postgres), applies migrations, builds repositories."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

from openmaas.storage.metadata.batches import BatchRepository
from openmaas.storage.metadata.files import FileRepository
from openmaas.storage.metadata.fine_tunes import FineTuneRepository
from openmaas.storage.metadata.leases import LeaseRepository
from openmaas.storage.metadata.repositories import (
    DatasetRepository,
    IdempotencyRepository,
    JobRepository,
    ModelRepository,
)
from openmaas.storage.metadata.tenancy import (
    ApiKeyRepository,
    AuditRepository,
    TenantRepository,
    UsageRepository,
)

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a worker process writes; busy_timeout makes writers queue, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_db_engine(url: str, **options: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10}, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **options)


def migrate(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass
class MetadataStore:
    """The repositories over one engine."""

    engine: Engine
    datasets: DatasetRepository
    files: FileRepository
    batches: BatchRepository
    fine_tunes: FineTuneRepository
    jobs: JobRepository
    leases: LeaseRepository
    models: ModelRepository
    idempotency: IdempotencyRepository
    tenants: TenantRepository
    api_keys: ApiKeyRepository
    usage: UsageRepository
    audit: AuditRepository

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, run_migrations: bool = True, pooled: bool = True) -> MetadataStore:
    engine = create_db_engine(url) if pooled else create_db_engine(url, poolclass=NullPool)
    if run_migrations:
        migrate(engine)
    return MetadataStore(
        engine=engine,
        datasets=DatasetRepository(engine),
        files=FileRepository(engine),
        batches=BatchRepository(engine),
        fine_tunes=FineTuneRepository(engine),
        jobs=JobRepository(engine),
        leases=LeaseRepository(engine),
        models=ModelRepository(engine),
        idempotency=IdempotencyRepository(engine),
        tenants=TenantRepository(engine),
        api_keys=ApiKeyRepository(engine),
        usage=UsageRepository(engine),
        audit=AuditRepository(engine),
    )
