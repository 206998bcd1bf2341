"""The cluster use case: what an admin reads of where jobs and models run (GET /v1/cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from openmaas.domain.cluster import ClusterState
from openmaas.domain.entities import Principal
from openmaas.errors import PermissionDenied


class ClusterService:
    def __init__(self, describe: Callable[[], ClusterState] | None) -> None:
        self._describe = describe  # None: embedded, no cluster

    async def describe(self, principal: Principal) -> ClusterState:
        if not principal.is_admin:
            raise PermissionDenied("this route needs an admin key")
        if self._describe is None:
            return ClusterState(mode="embedded")
        return await asyncio.to_thread(self._describe)  # Ray's state calls block
