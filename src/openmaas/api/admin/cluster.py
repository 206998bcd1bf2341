"""GET /v1/cluster (admin): the Ray cluster's nodes, resources and Serve deployments, or `embedded`."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Admin, Svc
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.protocol.native import ClusterInfo

router = APIRouter(route_class=JSONRoute, tags=["cluster"], responses=error_responses(*AUTHENTICATED))


@router.get("/v1/cluster", response_model=ClusterInfo)
async def cluster(caller: Admin, svc: Svc) -> ClusterInfo:
    return ClusterInfo.model_validate(asdict(await svc.cluster.describe(caller)))
