"""Admin and account routes: tenants, API keys, usage and the audit log."""

from fastapi import APIRouter

from openmaas.api.admin import tenants, usage

router = APIRouter()
router.include_router(tenants.router)
router.include_router(usage.router)

__all__ = ["router"]
