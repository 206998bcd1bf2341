"""Routes for /v1/tenants, /v1/tenants/{id}/keys, /v1/keys/{id} and /v1/audit (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Admin, Svc
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.domain.entities import ApiKey, AuditEntry, Tenant
from openmaas.protocol.native import AuditOut, KeyCreate, KeyOut, TenantCreate, TenantOut, TenantUpdate
from openmaas.protocol.openai import ListOf

router = APIRouter(route_class=JSONRoute, tags=["admin"], responses=error_responses(*AUTHENTICATED))


def tenant_out(t: Tenant) -> TenantOut:
    return TenantOut(id=t.id, name=t.name, limits=t.limits, disabled=t.disabled, created_at=int(t.created_at))


def key_out(k: ApiKey, secret: str | None = None) -> KeyOut:
    return KeyOut(
        id=k.id,
        tenant_id=k.tenant_id,
        prefix=k.prefix,
        scopes=list(k.scopes),
        limits=k.limits,
        created_at=int(k.created_at),
        expires_at=k.expires_at,
        revoked=k.revoked,
        key=secret,
    )


def audit_out(e: AuditEntry) -> AuditOut:
    return AuditOut(
        id=e.id,
        tenant_id=e.tenant_id,
        key_id=e.key_id,
        action=e.action,
        target=e.target,
        details=e.details,
        created_at=e.created_at,
    )


@router.post("/v1/tenants", status_code=201, response_model=TenantOut, responses=error_responses(409))
def create_tenant(body: TenantCreate, caller: Admin, svc: Svc) -> TenantOut:
    return tenant_out(svc.tenancy.create_tenant(caller, body.name, body.limits))


@router.get("/v1/tenants", response_model=ListOf[TenantOut])
def list_tenants(caller: Admin, svc: Svc) -> ListOf[TenantOut]:
    return ListOf[TenantOut](data=[tenant_out(t) for t in svc.tenancy.list_tenants(caller)])


@router.get("/v1/tenants/{tenant_id}", response_model=TenantOut, responses=error_responses(404))
def get_tenant(tenant_id: str, caller: Admin, svc: Svc) -> TenantOut:
    return tenant_out(svc.tenancy.get_tenant(caller, tenant_id))


@router.patch("/v1/tenants/{tenant_id}", response_model=TenantOut, responses=error_responses(404, 409))
def update_tenant(tenant_id: str, body: TenantUpdate, caller: Admin, svc: Svc) -> TenantOut:
    tenant = svc.tenancy.update_tenant(caller, tenant_id, body.limits, body.disabled)
    svc.auth.forget()  # limits and the disabled flag take effect at once in this process
    return tenant_out(tenant)


@router.post(
    "/v1/tenants/{tenant_id}/keys", status_code=201, response_model=KeyOut, responses=error_responses(404)
)
def create_key(tenant_id: str, body: KeyCreate, caller: Admin, svc: Svc) -> KeyOut:
    key, secret = svc.tenancy.create_key(caller, tenant_id, body.scopes, body.expires_at, body.limits)
    return key_out(key, secret)


@router.get("/v1/tenants/{tenant_id}/keys", response_model=ListOf[KeyOut], responses=error_responses(404))
def list_keys(tenant_id: str, caller: Admin, svc: Svc) -> ListOf[KeyOut]:
    return ListOf[KeyOut](data=[key_out(k) for k in svc.tenancy.list_keys(caller, tenant_id)])


@router.delete("/v1/keys/{key_id}", response_model=KeyOut, responses=error_responses(404, 409))
def revoke_key(key_id: str, caller: Admin, svc: Svc) -> KeyOut:
    key = svc.tenancy.revoke_key(caller, key_id)
    svc.auth.forget()
    return key_out(key)


@router.get("/v1/audit", response_model=ListOf[AuditOut])
def audit_log(caller: Admin, svc: Svc, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> ListOf[AuditOut]:
    return ListOf[AuditOut](data=[audit_out(e) for e in svc.tenancy.audit_log(caller, limit)])
