"""Routes for /v1/fine_tuning/jobs as OpenAI's clients expect them: a thin adapter between OpenAI's shapes and
FineTuningService (our job events become OpenAI's `message` and `metrics` events here)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Reader, Svc, Trainer
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.domain.entities import JobEvent
from openmaas.errors import InvalidRequest
from openmaas.protocol.openai import ListOf
from openmaas.protocol.openai.fine_tuning import (
    CheckpointMetrics,
    FineTuningError,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCreate,
    FineTuningJobEvent,
    Hyperparameters,
)
from openmaas.services.fine_tuning import FineTuningJobView

router = APIRouter(route_class=JSONRoute, tags=["openai"], responses=error_responses(*AUTHENTICATED))
EVENT_PREFIX = "ftevent-"


def job_out(view: FineTuningJobView) -> FineTuningJob:
    job, fine_tune = view.job, view.fine_tune
    error = None
    if job.status.value == "failed":
        error = FineTuningError(code="job_failed", message=job.reason or "the job failed", param=None)
    return FineTuningJob(
        id=job.id,
        created_at=int(job.created_at),
        finished_at=int(job.finished_at) if job.finished_at is not None and job.status.is_terminal else None,
        model=fine_tune.base_model,
        fine_tuned_model=view.fine_tuned_model,
        organization_id=job.tenant_id,
        status=job.status.value,  # our states are OpenAI's, less validating_files
        hyperparameters=Hyperparameters.model_validate(fine_tune.hyperparameters),
        training_file=fine_tune.training_file,
        result_files=[fine_tune.result_file] if fine_tune.result_file else [],
        error=error,
        seed=fine_tune.seed,
        metadata=fine_tune.metadata,
        user_provided_suffix=fine_tune.suffix,
    )


# Our metrics' names → OpenAI's (a `step` event's `loss` is the batch's training loss).
METRIC_NAMES = {
    "loss": "train_loss",
    "train_loss": "train_loss",
    "train_accuracy": "train_accuracy",
    "val_loss": "valid_loss",
    "val_accuracy": "valid_accuracy",
}


def _metrics(data: dict[str, Any]) -> dict[str, Any]:
    out = {"step": data.get("step")}
    out.update({theirs: data[ours] for ours, theirs in METRIC_NAMES.items() if data.get(ours) is not None})
    return out


def event_out(event: JobEvent) -> FineTuningJobEvent:
    data = event.data
    common: dict[str, Any] = {"id": f"{EVENT_PREFIX}{event.id}", "created_at": int(event.created_at)}
    if event.type in ("step", "epoch"):
        metrics = _metrics(data)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "step" and isinstance(v, float))
        message = f"Step {metrics['step']}: {shown}" if shown else f"Step {metrics['step']}"
        return FineTuningJobEvent(**common, level="info", message=message, type="metrics", data=metrics)
    if event.type == "data_report" and "estimated_trained_images" in data:
        width, height = data.get("width") or {}, data.get("height") or {}
        message = (
            f"Data report: {data.get('rows')} images in {len(data.get('label_balance') or {})} classes, "
            f"{width.get('min')}-{width.get('max')} x {height.get('min')}-{height.get('max')} pixels, about "
            f"{data.get('estimated_trained_images')} images to train on"
        )
        return FineTuningJobEvent(**common, level="info", message=message, type="message", data=data)
    if event.type == "data_report":
        words = data.get("words_per_example") or {}
        message = (
            f"Data report: {data.get('rows')} examples, {words.get('min')}/{words.get('median')}/{words.get('max')} "
            f"words each (min/median/max), about {data.get('estimated_trained_words')} words to train on"
        )
        return FineTuningJobEvent(**common, level="info", message=message, type="message", data=data)
    level = {"failed": "error", "interrupted": "warn"}.get(event.type, "info")
    reason = data.get("reason")
    message = f"Job {event.type}" + (f": {reason}" if reason else "")
    return FineTuningJobEvent(**common, level=level, message=message, type="message", data=data)  # type: ignore[arg-type]


@router.post("/v1/fine_tuning/jobs", response_model=FineTuningJob, responses=error_responses(404, 413, 422))
def create_fine_tuning_job(body: FineTuningJobCreate, caller: Trainer, svc: Svc) -> FineTuningJob:
    if body.validation_file is not None:
        raise InvalidRequest(
            "validation_file is not supported yet: the recipe holds out a validation split of the training file",
            param="validation_file",
            code="unsupported_parameter",
        )
    hyperparameters = body.hyperparameters
    if body.method is not None and body.method.supervised is not None and body.method.supervised.hyperparameters:
        hyperparameters = body.method.supervised.hyperparameters
    hp = hyperparameters or Hyperparameters()
    view = svc.fine_tuning.create(
        caller,
        model=body.model,
        training_file=body.training_file,
        n_epochs=hp.n_epochs,
        batch_size=hp.batch_size,
        learning_rate_multiplier=hp.learning_rate_multiplier,
        suffix=body.suffix,
        seed=body.seed,
        metadata=body.metadata,
    )
    return job_out(view)


@router.get("/v1/fine_tuning/jobs", response_model=ListOf[FineTuningJob])
def list_fine_tuning_jobs(
    caller: Reader, svc: Svc, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> ListOf[FineTuningJob]:
    views, more = svc.fine_tuning.list(caller, after=after, limit=limit)
    return ListOf[FineTuningJob](data=[job_out(v) for v in views], has_more=more)


@router.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}", response_model=FineTuningJob, responses=error_responses(404))
def retrieve_fine_tuning_job(fine_tuning_job_id: str, caller: Reader, svc: Svc) -> FineTuningJob:
    return job_out(svc.fine_tuning.get(caller, fine_tuning_job_id))


@router.post(
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
    response_model=FineTuningJob,
    responses=error_responses(404, 409),
)
def cancel_fine_tuning_job(fine_tuning_job_id: str, caller: Trainer, svc: Svc) -> FineTuningJob:
    return job_out(svc.fine_tuning.cancel(caller, fine_tuning_job_id))


@router.get(
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
    response_model=ListOf[FineTuningJobEvent],
    responses=error_responses(404),
)
def list_fine_tuning_events(
    fine_tuning_job_id: str,
    caller: Reader,
    svc: Svc,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> ListOf[FineTuningJobEvent]:
    """Oldest first; `after` is an event's id."""
    start = 0
    if after:
        number = after.removeprefix(EVENT_PREFIX)
        if not (number.isascii() and number.isdigit()) or len(number) > 15:
            raise InvalidRequest(f"after must be an event id ({EVENT_PREFIX}N)", param="after", code="invalid_after")
        start = int(number)
    events, more = svc.fine_tuning.events(caller, fine_tuning_job_id, after=start, limit=limit)
    return ListOf[FineTuningJobEvent](data=[event_out(e) for e in events], has_more=more)


@router.get(
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints",
    response_model=ListOf[FineTuningJobCheckpoint],
    responses=error_responses(404),
)
def list_fine_tuning_checkpoints(
    fine_tuning_job_id: str,
    caller: Reader,
    svc: Svc,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> ListOf[FineTuningJobCheckpoint]:
    """Newest first; `after` is a checkpoint's id. A checkpoint's `fine_tuned_model_checkpoint` names it, and is not
    yet a model that inference accepts."""
    view = svc.fine_tuning.get(caller, fine_tuning_job_id)
    name = view.fine_tuned_model or f"ft:{view.fine_tune.base_model}:{fine_tuning_job_id}"
    items = []
    for info in reversed(svc.fine_tuning.checkpoints(caller, fine_tuning_job_id)):
        metrics = _metrics({"step": info["step"], **info["metrics"]})
        items.append(
            FineTuningJobCheckpoint(
                id=f"ftckpt-{fine_tuning_job_id}-{info['step']}",
                created_at=int(info["created_at"]),
                fine_tuned_model_checkpoint=f"{name}:ckpt-step-{info['step']}",
                fine_tuning_job_id=fine_tuning_job_id,
                step_number=info["step"],
                metrics=CheckpointMetrics.model_validate(metrics),
            )
        )
    if after:
        ids = [c.id for c in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return ListOf[FineTuningJobCheckpoint](data=items[:limit], has_more=len(items) > limit)
