"""Which queued job runs next: fair across tenants first, then by priority within a tenant, then oldest.

A tenant with fewer running jobs goes first; between equals, the one whose last job started longest ago
(or never). So one tenant's ten queued jobs do not hold back another tenant's one, and `priority` orders
a tenant's own jobs without letting it jump ahead of other tenants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedJob:
    id: str
    tenant_id: str
    priority: int


def pick_next(
    queued: Sequence[QueuedJob], running: Mapping[str, int], last_started: Mapping[str, float]
) -> QueuedJob | None:
    """`queued` is oldest first; `running` and `last_started` are per tenant."""
    if not queued:
        return None
    tenants = {job.tenant_id for job in queued}
    tenant = min(tenants, key=lambda t: (running.get(t, 0), last_started.get(t, float("-inf")), t))
    own = [job for job in queued if job.tenant_id == tenant]
    return max(own, key=lambda job: job.priority)  # max() keeps the first (oldest) among equal priorities
