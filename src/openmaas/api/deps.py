"""Request dependencies: the caller's Principal and the services, as Annotated aliases; and the same checks
as plain calls (`authorize`, `json_body`) for the inference routes.

Why both: FastAPI solves dependencies anew on every request, and with three of them (the scope check, the
key, the services) that cost more than everything else a prediction does before the model runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from openmaas.api.bodies import decode_json
from openmaas.config import Settings
from openmaas.domain.entities import Principal
from openmaas.errors import PermissionDenied
from openmaas.services.artifacts import ArtifactService
from openmaas.services.auth import AuthService
from openmaas.services.batches import BatchService
from openmaas.services.cluster import ClusterService
from openmaas.services.datasets import DatasetService
from openmaas.services.exports import ExportService
from openmaas.services.files import FileService
from openmaas.services.fine_tuning import FineTuningService
from openmaas.services.generation import GenerationService
from openmaas.services.inference import InferenceService
from openmaas.services.jobs import JobService
from openmaas.services.limits import RateLimiter
from openmaas.services.registry import RegistryService
from openmaas.services.tenancy import TenancyService
from openmaas.services.usage import UsageService


@dataclass
class Services:
    settings: Settings
    auth: AuthService
    datasets: DatasetService
    files: FileService
    fine_tuning: FineTuningService
    batches: BatchService
    jobs: JobService
    registry: RegistryService
    inference: InferenceService
    generation: GenerationService
    artifacts: ArtifactService
    exports: ExportService
    tenancy: TenancyService
    usage: UsageService
    limiter: RateLimiter
    cluster: ClusterService


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a sync dependency in its thread pool, a hop on every request.
    return services_of(request)


async def get_principal(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Principal:
    """Authenticate the key and count the request against its requests-per-minute limits."""
    return await _principal(request, authorization)


async def _principal(request: Request, authorization: str | None) -> Principal:
    services = services_of(request)
    auth = services.auth
    principal = auth.cached(authorization)
    if principal is None:
        principal = await asyncio.to_thread(auth.authenticate, authorization)
    headers = await services.limiter.admit_request(principal)
    if headers:
        add_response_headers(request, headers)
    return principal


def add_response_headers(request: Request, headers: dict[str, str]) -> None:
    request.state.response_headers = {**getattr(request.state, "response_headers", {}), **headers}


def _check_scope(principal: Principal, scope: str) -> Principal:
    if not principal.may(scope):
        raise PermissionDenied(f"this API key lacks the {scope!r} scope", code="missing_scope")
    return principal


def scoped(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return _check_scope(principal, scope)

    return dependency


async def authorize(request: Request, scope: str) -> Principal:
    """What a `Depends(scoped(scope))` parameter gives, for a route to call itself."""
    return _check_scope(await _principal(request, request.headers.get("authorization")), scope)


async def json_body(request: Request) -> Any:
    """The request's JSON body (None when it is empty); invalid JSON (lone surrogates included) is a 400, as for
    routes with a body model: one decoder for both (api/bodies.py)."""
    raw = await request.body()
    return decode_json(raw) if raw else None


Caller = Annotated[Principal, Depends(get_principal)]
Reader = Annotated[Principal, Depends(scoped("read"))]
Trainer = Annotated[Principal, Depends(scoped("train"))]
Inferrer = Annotated[Principal, Depends(scoped("infer"))]
Admin = Annotated[Principal, Depends(scoped("admin"))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("this route needs an admin key")


Svc = Annotated[Services, Depends(get_services)]
