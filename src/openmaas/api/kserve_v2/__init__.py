"""The KServe Open Inference Protocol v2 surface: REST routes under /v2 and the gRPC GRPCInferenceService."""

from typing import Any

from fastapi import APIRouter

from openmaas.api.deps import Services
from openmaas.api.kserve_v2 import rest
from openmaas.api.metrics import RequestSeries

# Included one by one by the app (see api/native/__init__.py): inference, the hot path, first.
routers: tuple[APIRouter, ...] = (rest.inference, rest.health, rest.router)



async def start_grpc(services: Services, series: RequestSeries, host: str, port: int) -> Any:
    """Start the gRPC server (a grpc.aio.Server; its `stop` ends it). grpc and tritonclient load only here."""
    from openmaas.api.kserve_v2.grpc_service import start_grpc as start

    return await start(services, series, host, port)


__all__ = ["routers", "start_grpc"]
