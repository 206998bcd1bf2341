"""Routes for /v1/jobs: create, read, list, events and cancel training jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import IdempotencyKey, Reader, Services, Svc, Trainer
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.domain.entities import Job, JobEvent, Principal
from openmaas.domain.ids import DB_INT_MAX
from openmaas.domain.jobs import JobStatus
from openmaas.errors import InvalidRequest
from openmaas.protocol.native import CheckpointOut, JobCreate, JobEventOut, JobOut
from openmaas.protocol.openai import ListOf

router = APIRouter(route_class=JSONRoute, tags=["jobs"], responses=error_responses(*AUTHENTICATED))


def _ts(value: float | None) -> int | None:
    return int(value) if value is not None else None


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        model=job.model,
        dataset=job.dataset_id,
        recipe=job.recipe,
        hyperparameters=job.hyperparameters,
        status=job.status.value,
        reason=job.reason,
        priority=job.priority,
        attempts=job.attempts,
        model_version=job.model_version,
        metrics=job.metrics,
        created_at=int(job.created_at),
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
    )


@router.post("/v1/jobs", status_code=201, response_model=JobOut, responses=error_responses(404, 409, 422))
def create_job(body: JobCreate, caller: Trainer, svc: Svc, idempotency_key: IdempotencyKey = None) -> JobOut:
    job = svc.jobs.create(
        caller,
        dataset_id=body.dataset,
        model=body.model,
        recipe=body.recipe,
        hyperparameters=body.hyperparameters,
        priority=body.priority,
        idempotency_key=idempotency_key,
    )
    return job_out(job)


@router.get("/v1/jobs", response_model=ListOf[JobOut])
def list_jobs(
    caller: Reader,
    svc: Svc,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: JobStatus | None = None,
) -> ListOf[JobOut]:
    items, more = svc.jobs.list(caller, after=after, limit=limit, status=status)
    return ListOf[JobOut](data=[job_out(j) for j in items], has_more=more)


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=error_responses(404))
def get_job(job_id: str, caller: Reader, svc: Svc) -> JobOut:
    return job_out(svc.jobs.get(caller, job_id))


@router.get(
    "/v1/jobs/{job_id}/events",
    response_model=ListOf[JobEventOut],
    responses={200: {"content": {"text/event-stream": {}}}, **error_responses(404)},
)
async def job_events(
    job_id: str,
    caller: Reader,
    svc: Svc,
    after: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    stream: bool = False,
    last_event_id: Annotated[str, Header(json_schema_extra={"pattern": LAST_EVENT_ID_PATTERN})] = "",
) -> Any:
    """The job's progress events; with `stream=true`, Server-Sent Events as they happen until it ends."""
    if last_event_id.strip():  # an empty one is no id (the SSE spec's reset)
        after = max(after, _event_id(last_event_id))
    events, more = await asyncio.to_thread(svc.jobs.events, caller, job_id, after=after, limit=limit)
    if not stream:
        return ListOf[JobEventOut](data=[event_out(e) for e in events], has_more=more)
    return StreamingResponse(
        stream_events(svc, caller, job_id, events, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# Documented as up to 15 digits, within DB_INT_MAX (16 digits), which the check below enforces exactly.
LAST_EVENT_ID_PATTERN = r"^[0-9]{0,15}$"


def _event_id(header: str) -> int:
    """A reconnecting client's Last-Event-ID: one of our event ids (ASCII digits), so bounded like `after`."""
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > DB_INT_MAX:
        raise InvalidRequest(
            f"Last-Event-ID must be an event id, an integer from 0 to {DB_INT_MAX}",
            param="Last-Event-ID",
            code="invalid_last_event_id",
        )
    return int(value)


def event_out(e: JobEvent) -> JobEventOut:
    return JobEventOut(id=e.id, type=e.type, data=e.data, created_at=e.created_at)


FINAL_EVENTS = {"succeeded", "failed", "cancelled"}
POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


async def stream_events(
    svc: Services, caller: Principal, job_id: str, first: list[JobEvent], after: int
) -> AsyncIterator[str]:
    """`first` are the events after `after`; later polls go on from the last event sent, or from `after`
    itself while none was (a client that reconnects with the newest id must not get the job replayed)."""
    events, quiet_since = first, time.monotonic()
    while True:
        for event in events:
            after = event.id
            yield f"id: {event.id}\nevent: {event.type}\ndata: {event_out(event).model_dump_json()}\n\n"
            if event.type in FINAL_EVENTS:
                return
        if events:
            quiet_since = time.monotonic()
        elif await asyncio.to_thread(svc.jobs.is_finished, job_id):
            return
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)
        events, _ = await asyncio.to_thread(svc.jobs.events, caller, job_id, after=after, limit=1000)


@router.get(
    "/v1/jobs/{job_id}/checkpoints", response_model=ListOf[CheckpointOut], responses=error_responses(404)
)
def job_checkpoints(job_id: str, caller: Reader, svc: Svc) -> ListOf[CheckpointOut]:
    return ListOf[CheckpointOut](data=[CheckpointOut(**c) for c in svc.jobs.list_checkpoints(caller, job_id)])


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409))
def cancel_job(job_id: str, caller: Trainer, svc: Svc) -> JobOut:
    return job_out(svc.jobs.cancel(caller, job_id))
