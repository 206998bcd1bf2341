"""Several API processes on one port (`openmaas serve --workers N`): the data directory prepared once before
uvicorn starts its worker processes, the app factory each of them calls, and the HTTP protocol they import by
name (uvicorn spawns its workers, and a class made at run time, as `protocol_class` makes, cannot travel).

What the processes share is outside them: the database (jobs, their events, leases, idempotency keys, usage),
Redis (rate-limit counters, which is why this mode needs it) and the data directory, where each process keeps
its own usage journal and a live one adopts the journal of one that died (services/usage.py).
"""

from __future__ import annotations

from fastapi import FastAPI

from openmaas.api.app import announce_key, create_app
from openmaas.api.connections import ConnectionLimits, LimitedHttpToolsProtocol
from openmaas.config import Settings
from openmaas.services.auth import AuthService
from openmaas.services.foundation import FoundationModels
from openmaas.storage.artifacts import open_artifact_store
from openmaas.storage.metadata import open_store

APP_FACTORY = "openmaas.api.workers:create_worker_app"
HTTP_PROTOCOL = "openmaas.api.workers:WorkerHttpProtocol"


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )


class WorkerHttpProtocol(LimitedHttpToolsProtocol):
    """The connections of a worker process, with the limits its `create_worker_app` read from its settings."""


def refusal(settings: Settings, workers: int) -> str | None:
    """Why these settings cannot run `workers` API processes, or None."""
    if workers > 1 and not settings.redis_url:
        return (
            f"--workers {workers} needs OPENMAAS_REDIS_URL: rate limits are counted in Redis so that they hold "
            "across the processes (each would count its own otherwise)"
        )
    if workers > 1 and settings.grpc_port is not None:
        return f"--workers {workers} cannot share OPENMAAS_GRPC_PORT: run the gRPC surface with one process"
    return None


def prepare(settings: Settings) -> None:
    """What one process does before the workers start, so that they never race for it: the schema migrated,
    interrupted writes cleaned up (a worker cannot: its siblings may be writing), the foundation models
    registered, and the admin key made and printed once."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.resolved_database_url)
    try:
        artifacts = open_artifact_store(settings.artifacts_url, settings.artifacts_dir, settings.artifacts_cache_dir)
        artifacts.clean_temporary()
        foundation = FoundationModels(store, artifacts, settings.resolved_foundation_cache_dir)
        foundation.ensure(settings.foundation_models)
        foundation.wait()
        new_key = AuthService(store.tenants, store.api_keys).bootstrap(settings.admin_key, settings.admin_key_file)
        if new_key:
            announce_key(new_key, settings)
    finally:
        store.close()


def create_worker_app() -> FastAPI:
    """uvicorn's factory in each worker process: settings from the environment `openmaas serve` set up."""
    settings = Settings()
    WorkerHttpProtocol.limits = connection_limits(settings)
    return create_app(settings, prepared=True)
