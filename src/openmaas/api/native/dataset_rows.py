"""GET /v1/datasets/{id}/rows: a dataset's first cleaned rows, for a look at what a job will train on."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Reader, Svc
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.protocol.dashboard import DatasetRows

router = APIRouter(route_class=JSONRoute, tags=["datasets"], responses=error_responses(*AUTHENTICATED))


@router.get("/v1/datasets/{dataset_id}/rows", response_model=DatasetRows, responses=error_responses(404))
async def dataset_rows(
    dataset_id: str, caller: Reader, svc: Svc, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> DatasetRows:
    # The blob is read whole and its hash checked (up to the upload limit): off the event loop.
    rows, more = await asyncio.to_thread(svc.datasets.first_rows, caller, dataset_id, limit)
    return DatasetRows(data=rows, has_more=more)
