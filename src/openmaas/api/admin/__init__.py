"""Admin and account routes: tenants, API keys, usage, the audit log and the cluster."""

from fastapi import APIRouter

from openmaas.api.admin import cluster, tenants, usage

# Included one by one by the app (see api/native/__init__.py).
routers: tuple[APIRouter, ...] = (tenants.router, usage.router, cluster.router)

__all__ = ["routers"]
