"""Request dependencies: the caller's Principal and the services, as Annotated aliases."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from openmaas.config import Settings
from openmaas.domain.entities import Principal
from openmaas.errors import PermissionDenied
from openmaas.services.artifacts import ArtifactService
from openmaas.services.auth import AuthService
from openmaas.services.datasets import DatasetService
from openmaas.services.inference import InferenceService
from openmaas.services.jobs import JobService
from openmaas.services.registry import RegistryService


@dataclass
class Services:
    settings: Settings
    auth: AuthService
    datasets: DatasetService
    jobs: JobService
    registry: RegistryService
    inference: InferenceService
    artifacts: ArtifactService


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_principal(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Principal:
    auth = get_services(request).auth
    return auth.cached(authorization) or await asyncio.to_thread(auth.authenticate, authorization)


Caller = Annotated[Principal, Depends(get_principal)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("this route needs an admin key")


Svc = Annotated[Services, Depends(get_services)]
