"""Tenants and API keys (admin only), with every change written to the audit log."""

from __future__ import annotations

from typing import Any

from openmaas.domain.entities import SCOPES, SYSTEM_TENANT, ApiKey, AuditEntry, Principal, Tenant
from openmaas.domain.ids import DB_INT_MAX, new_id, now
from openmaas.domain.refs import is_valid_name
from openmaas.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from openmaas.services.auth import display_prefix, generate_key, hash_key
from openmaas.storage.metadata import MetadataStore
from openmaas.storage.metadata.repositories import AlreadyExists

LIMITS = ("requests_per_minute", "tokens_per_minute", "concurrent_jobs", "storage_bytes")


def check_limits(limits: dict[str, Any], allowed: tuple[str, ...] = LIMITS) -> dict[str, int]:
    for name, value in limits.items():
        if name not in allowed:
            raise InvalidRequest(f"unknown limit {name!r}; known: {', '.join(allowed)}", param=f"limits.{name}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= DB_INT_MAX:
            raise InvalidRequest(f"limit {name!r} must be an integer from 0 to {DB_INT_MAX}", param=f"limits.{name}")
    return dict(limits)


class TenancyService:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    @staticmethod
    def _admin(principal: Principal) -> None:
        if not principal.is_admin:
            raise PermissionDenied("managing tenants and keys needs an admin key", code="admin_required")

    def _audit(self, principal: Principal, action: str, target: str, details: dict[str, Any]) -> None:
        self.store.audit.record(principal.tenant_id, principal.key_id, action, target, details)

    def create_tenant(self, principal: Principal, name: str, limits: dict[str, Any]) -> Tenant:
        self._admin(principal)
        # The name qualifies the tenant's public models (`name/model`), so it follows the rules of model names.
        if not is_valid_name(name):
            raise InvalidRequest(
                "name must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                param="name",
                code="invalid_tenant_name",
            )
        tenant = Tenant(new_id("tn"), name, check_limits(limits), False, now())
        try:
            self.store.tenants.create(tenant)
        except AlreadyExists:
            raise Conflict(f"a tenant named {name!r} exists", param="name", code="tenant_exists") from None
        self._audit(principal, "tenant.create", tenant.id, {"name": tenant.name, "limits": tenant.limits})
        return tenant

    def list_tenants(self, principal: Principal) -> list[Tenant]:
        self._admin(principal)
        return [t for t in self.store.tenants.all() if t.id != SYSTEM_TENANT]

    def get_tenant(self, principal: Principal, tenant_id: str) -> Tenant:
        self._admin(principal)
        tenant = self.store.tenants.get(tenant_id)
        if tenant is None or tenant.id == SYSTEM_TENANT:
            raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id", code="tenant_not_found")
        return tenant

    def update_tenant(
        self, principal: Principal, tenant_id: str, limits: dict[str, Any] | None, disabled: bool | None
    ) -> Tenant:
        self.get_tenant(principal, tenant_id)
        values: dict[str, Any] = {}
        if limits is not None:
            values["limits"] = check_limits(limits)
        if disabled is not None:
            if disabled and tenant_id == principal.tenant_id:
                raise Conflict("an admin cannot disable its own tenant", param="disabled", code="self_disable")
            values["disabled"] = disabled
        if not values:
            raise InvalidRequest("nothing to change: send limits and/or disabled")
        tenant = self.store.tenants.update(tenant_id, **values)
        assert tenant is not None
        self._audit(principal, "tenant.update", tenant_id, values)
        return tenant

    def create_key(
        self,
        principal: Principal,
        tenant_id: str,
        scopes: list[str],
        expires_at: float | None,
        limits: dict[str, Any],
    ) -> tuple[ApiKey, str]:
        self.get_tenant(principal, tenant_id)
        if not scopes or any(scope not in SCOPES for scope in scopes):
            raise InvalidRequest(f"scopes must be a non-empty subset of {', '.join(SCOPES)}", param="scopes")
        if expires_at is not None and expires_at <= now():
            raise InvalidRequest("expires_at must be in the future", param="expires_at")
        secret = generate_key()
        key = ApiKey(
            id=new_id("key"),
            tenant_id=tenant_id,
            prefix=display_prefix(),
            scopes=tuple(dict.fromkeys(scopes)),
            created_at=now(),
            expires_at=expires_at,
            limits=check_limits(limits, ("requests_per_minute", "tokens_per_minute")),
        )
        self.store.api_keys.add(key, hash_key(secret))
        self._audit(principal, "key.create", key.id, {"tenant": tenant_id, "scopes": list(key.scopes)})
        return key, secret

    def list_keys(self, principal: Principal, tenant_id: str) -> list[ApiKey]:
        self.get_tenant(principal, tenant_id)
        return self.store.api_keys.for_tenant(tenant_id)

    def revoke_key(self, principal: Principal, key_id: str) -> ApiKey:
        self._admin(principal)
        key = self.store.api_keys.get(key_id)
        if key is None:
            raise NotFound(f"no key {key_id!r}", param="key_id", code="key_not_found")
        if key_id == principal.key_id:
            raise Conflict("a key cannot revoke itself", param="key_id", code="self_revoke")
        self.store.api_keys.revoke(key_id)
        self._audit(principal, "key.revoke", key_id, {"tenant": key.tenant_id})
        return self.store.api_keys.get(key_id) or key

    def audit_log(self, principal: Principal, limit: int) -> list[AuditEntry]:
        self._admin(principal)
        return self.store.audit.entries(limit)

    def audit(self, principal: Principal, action: str, target: str, details: dict[str, Any]) -> None:
        self._audit(principal, action, target, details)
