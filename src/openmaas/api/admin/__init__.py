"""Admin and account routes: tenants, API keys, usage and the audit log."""

from fastapi import APIRouter

from openmaas.api.admin import tenants, usage

# Included one by one by the app (see api/native/__init__.py).
routers: tuple[APIRouter, ...] = (tenants.router, usage.router)

__all__ = ["routers"]
