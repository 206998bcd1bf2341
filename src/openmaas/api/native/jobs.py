"""Routes for /v1/jobs: create, read, list, events and cancel training jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from openmaas.api.deps import Caller, Svc
from openmaas.domain.entities import Job
from openmaas.domain.jobs import JobStatus
from openmaas.protocol.native import JobCreate, JobEventOut, JobOut
from openmaas.protocol.openai import ListOf

router = APIRouter(tags=["jobs"])


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
        model_version=job.model_version,
        metrics=job.metrics,
        created_at=int(job.created_at),
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
    )


@router.post("/v1/jobs", status_code=201, response_model=JobOut)
def create_job(body: JobCreate, caller: Caller, svc: Svc) -> JobOut:
    job = svc.jobs.create(
        caller,
        dataset_id=body.dataset,
        model=body.model,
        recipe=body.recipe,
        hyperparameters=body.hyperparameters,
    )
    return job_out(job)


@router.get("/v1/jobs", response_model=ListOf[JobOut])
def list_jobs(
    caller: Caller,
    svc: Svc,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: JobStatus | None = None,
) -> ListOf[JobOut]:
    items, more = svc.jobs.list(caller, after=after, limit=limit, status=status)
    return ListOf[JobOut](data=[job_out(j) for j in items], has_more=more)


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, caller: Caller, svc: Svc) -> JobOut:
    return job_out(svc.jobs.get(caller, job_id))


@router.get("/v1/jobs/{job_id}/events", response_model=ListOf[JobEventOut])
def job_events(
    job_id: str,
    caller: Caller,
    svc: Svc,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> ListOf[JobEventOut]:
    events, more = svc.jobs.events(caller, job_id, after=after, limit=limit)
    return ListOf[JobEventOut](
        data=[JobEventOut(id=e.id, type=e.type, data=e.data, created_at=e.created_at) for e in events],
        has_more=more,
    )


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, caller: Caller, svc: Svc) -> JobOut:
    return job_out(svc.jobs.cancel(caller, job_id))
