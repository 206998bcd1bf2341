"""The KServe Open Inference Protocol v2 surface: REST routes under /v2 and the gRPC GRPCInferenceService."""

from fastapi import APIRouter

from openmaas.api.kserve_v2 import rest

# Included one by one by the app (see api/native/__init__.py): inference, the hot path, first.
routers: tuple[APIRouter, ...] = (rest.inference, rest.health, rest.router)

__all__ = ["routers"]
