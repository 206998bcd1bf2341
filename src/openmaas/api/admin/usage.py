"""GET /v1/usage: the caller's tenant's usage (or every tenant's, for an admin), grouped by model, key, day,
tenant or protocol."""

from __future__ import annotations

import datetime
from typing import Literal

from fastapi import APIRouter

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Reader, Svc
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.protocol.native import UsageRow
from openmaas.protocol.openai import ListOf

router = APIRouter(route_class=JSONRoute, tags=["usage"], responses=error_responses(*AUTHENTICATED))


@router.get("/v1/usage", response_model=ListOf[UsageRow], response_model_exclude_none=True)
def usage(
    caller: Reader,
    svc: Svc,
    start: float | None = None,
    end: float | None = None,
    group_by: Literal["model", "key", "day", "tenant", "protocol"] | None = None,
    tenant: Literal["all"] | None = None,
) -> ListOf[UsageRow]:
    rows = svc.usage.summary(caller, start=start, end=end, group_by=group_by, all_tenants=tenant == "all")
    out = []
    for row in rows:
        item = {k: v for k, v in row.items() if k not in ("key_id", "tenant_id", "day")}
        if "key_id" in row:
            item["key"] = row["key_id"]
        if "tenant_id" in row:
            item["tenant"] = row["tenant_id"]
        if row.get("day") is not None:
            item["day"] = datetime.date.fromtimestamp(int(row["day"]) * 86400).isoformat()
        out.append(UsageRow(**item))
    return ListOf[UsageRow](data=out)
