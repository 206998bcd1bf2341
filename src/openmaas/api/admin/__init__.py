"""Admin and account routes: the caller's own key (/v1/me), tenants, API keys, usage, the audit log and the
cluster."""

from fastapi import APIRouter

from openmaas.api.admin import cluster, me, tenants, usage

# Included one by one by the app (see api/native/__init__.py).
routers: tuple[APIRouter, ...] = (me.router, tenants.router, usage.router, cluster.router)

__all__ = ["routers"]
