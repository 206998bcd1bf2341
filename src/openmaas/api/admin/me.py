"""GET /v1/me: the calling key's tenant, scopes and limits (any valid key may ask about itself)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Caller, Svc
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.protocol.dashboard import MeOut

router = APIRouter(route_class=JSONRoute, tags=["account"], responses=error_responses(*AUTHENTICATED))


@router.get("/v1/me", response_model=MeOut)
async def me(caller: Caller, svc: Svc) -> MeOut:
    tenant, key = await asyncio.to_thread(svc.auth.describe, caller)
    return MeOut(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        key_id=key.id,
        prefix=key.prefix,
        scopes=sorted(caller.scopes),
        is_admin=caller.is_admin,
        expires_at=key.expires_at,
        key_limits=key.limits,
        tenant_limits=tenant.limits,
    )
