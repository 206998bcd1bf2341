"""API keys: the bootstrap admin key, hashing, and turning a bearer token into a Principal.

Only a key's hash is stored, and keys are found by it. A key's `prefix` is a random label to tell keys apart
in listings; it is drawn apart from the key, so it reveals nothing of it."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path

from openmaas.domain.entities import SCOPES, ApiKey, Principal, Tenant
from openmaas.domain.ids import new_id, now
from openmaas.errors import PermissionDenied, Unauthenticated
from openmaas.storage.metadata.tenancy import ApiKeyRepository, TenantRepository

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
ALL_SCOPES = SCOPES
KEY_PREFIX = "om-"


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix() -> str:
    """A key's label in listings: random, drawn apart from the key."""
    return secrets.token_hex(6)


class AuthService:
    # Verified keys are remembered briefly so the hot path skips the database; a revoked key stops
    # working within this many seconds on every server process.
    CACHE_SECONDS = 10.0

    def __init__(self, tenants: TenantRepository, api_keys: ApiKeyRepository) -> None:
        self.tenants = tenants
        self.api_keys = api_keys
        self._verified: dict[str, tuple[Principal, float]] = {}

    def bootstrap(self, configured_key: str | None, key_file: Path) -> str | None:
        """Make sure an admin key exists. Returns a newly generated key (to print once), else None."""
        self.tenants.ensure(DEFAULT_TENANT, DEFAULT_TENANT)
        if configured_key:
            if not self.api_keys.has_hash(hash_key(configured_key)):
                self._store(configured_key, ALL_SCOPES)
            return None
        if key_file.exists():
            return None
        key = generate_key()
        self._store(key, ALL_SCOPES)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return key

    def _store(self, key: str, scopes: tuple[str, ...]) -> ApiKey:
        record = ApiKey(
            id=new_id("key"), tenant_id=DEFAULT_TENANT, prefix=display_prefix(), scopes=scopes, created_at=now()
        )
        self.api_keys.add(record, hash_key(key))
        return record

    @staticmethod
    def token_of(authorization: str | None) -> str:
        if not authorization:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("malformed Authorization header: expected 'Bearer <key>'")
        return token

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal for a recently verified key, without touching the database."""
        entry = self._verified.get(hash_key(self.token_of(authorization)))
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        return None

    def authenticate(self, authorization: str | None) -> Principal:
        token = self.token_of(authorization)
        wanted = hash_key(token)
        found = self.api_keys.by_hash(wanted)
        if found is None:
            raise Unauthenticated("invalid API key")
        key, tenant = found
        if key.revoked:
            raise Unauthenticated("this API key was revoked", code="revoked_api_key")
        if key.expires_at is not None and key.expires_at <= time.time():
            raise Unauthenticated("this API key has expired", code="expired_api_key")
        if tenant.disabled:
            raise PermissionDenied(f"tenant {tenant.name!r} is disabled", code="tenant_disabled")
        principal = Principal(
            tenant_id=key.tenant_id,
            key_id=key.id,
            scopes=frozenset(key.scopes),
            key_limits=key.limits,
            tenant_limits=tenant.limits,
        )
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[wanted] = (principal, time.monotonic() + self.CACHE_SECONDS)
        return principal

    def describe(self, principal: Principal) -> tuple[Tenant, ApiKey]:
        """The caller's own tenant and key, for the key to learn what it may do (any key may ask)."""
        tenant, key = self.tenants.get(principal.tenant_id), self.api_keys.get(principal.key_id)
        if tenant is None or key is None:  # deleted since the key was verified and remembered
            raise Unauthenticated("invalid API key")
        return tenant, key

    def forget(self) -> None:
        """Drop remembered keys (after a revocation or a tenant change in this process)."""
        self._verified.clear()
