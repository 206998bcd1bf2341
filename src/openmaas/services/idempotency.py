"""Idempotency-Key handling: a retried create request gets the first request's resource, not a duplicate."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from openmaas.domain.entities import Principal
from openmaas.errors import Conflict, InvalidRequest
from openmaas.storage.metadata.repositories import IdempotencyRepository


def fingerprint(*parts: Any) -> str:
    """A stable hash of a request, to tell an honest retry from a different request reusing its key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Idempotency:
    def __init__(self, keys: IdempotencyRepository) -> None:
        self.keys = keys

    @staticmethod
    def check(key: str | None) -> None:
        if key is not None and not 1 <= len(key) <= 255:
            raise InvalidRequest("Idempotency-Key must be 1 to 255 characters", param="Idempotency-Key")

    def first_result(self, principal: Principal, scope: str, key: str | None, request: str) -> str | None:
        """The id of what the first request with this key created; None for a new request."""
        if key is None:
            return None
        found = self.keys.find(principal.tenant_id, scope, key)
        if found is None:
            return None
        if found[0] != request:
            raise Conflict(
                f"Idempotency-Key {key!r} was already used for a different request",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return found[1]
