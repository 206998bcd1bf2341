"""Routes for /v1/fine_tuning/jobs as OpenAI's clients expect them: a thin adapter between OpenAI's shapes and
FineTuningService (our job events become OpenAI's `message` and `metrics` events here)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Reader, Svc, Trainer
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.domain.entities import JobEvent
from openmaas.domain.refs import CHECKPOINT_PREFIX
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
    created = job.created_at if job is not None else (fine_tune.created_at or 0.0)
    finished = None
    if job is not None and job.finished_at is not None and job.status.is_terminal:
        finished = int(job.finished_at)
    elif view.status == "failed":
        finished = int((fine_tune.report or {}).get("validated_at") or created)
    return FineTuningJob(
        id=fine_tune.job_id,
        created_at=int(created),
        finished_at=finished,
        estimated_finish=int(view.estimated_finish) if view.estimated_finish is not None else None,
        model=fine_tune.base_model,
        fine_tuned_model=view.fine_tuned_model,
        organization_id=fine_tune.tenant_id,
        status=view.status,  # type: ignore[arg-type]  # FineTuningService gives only OpenAI's states
        hyperparameters=Hyperparameters.model_validate(fine_tune.hyperparameters),
        training_file=fine_tune.training_file,
        validation_file=fine_tune.validation_file,
        result_files=[fine_tune.result_file] if fine_tune.result_file else [],
        trained_tokens=view.trained_tokens,
        error=FineTuningError.model_validate(view.error) if view.error else None,
        seed=fine_tune.seed,
        metadata=fine_tune.metadata,
        user_provided_suffix=fine_tune.suffix,
    )


def report_message(data: dict[str, Any]) -> str:
    """The data report in one line, as the event's message (its `data` holds every figure)."""
    if data.get("unit") == "images":
        width, height = data.get("width") or {}, data.get("height") or {}
        message = (
            f"Data report: {data.get('rows')} images in {len(data.get('label_balance') or {})} classes, "
            f"{width.get('min')}-{width.get('max')} x {height.get('min')}-{height.get('max')} pixels, "
            f"{data.get('exact_duplicates_dropped')} exact duplicates dropped, about "
            f"{data.get('estimated_trained_tokens')} images to train on"
        )
        if data.get("estimated_seconds") is not None:
            message += f"; about {data['estimated_seconds']:.0f} s at {data['speed']['tokens_per_second']} images/s"
        return message
    tokens = data.get("tokens_per_example") or {}
    message = (
        f"Data report: {data.get('rows')} examples, {tokens.get('min')}/{tokens.get('median')}/{tokens.get('max')} "
        f"tokens each (min/median/max, {data.get('tokenizer')}), {data.get('over_context')} over the context of "
        f"{data.get('context')}, {data.get('exact_duplicates_dropped')} exact and {data.get('near_duplicates')} near "
        f"duplicates, about {data.get('estimated_trained_tokens')} tokens to train on"
    )
    if "conflicting_labels" in data:
        message += f"; {data['conflicting_labels']} texts with conflicting labels"
    if data.get("estimated_seconds") is not None:
        message += f"; about {data['estimated_seconds']:.0f} s at {data['speed']['tokens_per_second']} tokens/s"
    return message


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
    if event.type == "data_report":
        return FineTuningJobEvent(**common, level="info", message=report_message(data), type="message", data=data)
    level = {"failed": "error", "interrupted": "warn"}.get(event.type, "info")
    if event.type == "failed" and data.get("code"):  # a failed validation: the file's line and reason
        message = f"Validation of {data.get('param')} failed: {data.get('reason')}"
        return FineTuningJobEvent(**common, level="error", message=message, type="message", data=data)
    reason = data.get("reason")
    message = f"Job {event.type}" + (f": {reason}" if reason else "")
    return FineTuningJobEvent(**common, level=level, message=message, type="message", data=data)  # type: ignore[arg-type]


@router.post("/v1/fine_tuning/jobs", response_model=FineTuningJob, responses=error_responses(404, 413, 422))
def create_fine_tuning_job(body: FineTuningJobCreate, caller: Trainer, svc: Svc) -> FineTuningJob:
    hyperparameters = body.hyperparameters
    if body.method is not None and body.method.supervised is not None and body.method.supervised.hyperparameters:
        hyperparameters = body.method.supervised.hyperparameters
    hp = hyperparameters or Hyperparameters()
    view = svc.fine_tuning.create(
        caller,
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
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
    """Newest first; `after` is a checkpoint's id. A checkpoint's `fine_tuned_model_checkpoint` is a model id
    that chat, completions, embeddings and predict accept once the job has succeeded (the last one is the
    fine-tuned model itself)."""
    view = svc.fine_tuning.get(caller, fine_tuning_job_id)
    name = svc.fine_tuning.model_name(caller, view.fine_tune)
    items = []
    for info in reversed(svc.fine_tuning.checkpoints(caller, fine_tuning_job_id)):
        metrics = _metrics({"step": info["step"], **info["metrics"]})
        items.append(
            FineTuningJobCheckpoint(
                id=f"ftckpt-{fine_tuning_job_id}-{info['step']}",
                created_at=int(info["created_at"]),
                fine_tuned_model_checkpoint=f"{name}:{CHECKPOINT_PREFIX}{info['step']}",
                fine_tuning_job_id=fine_tuning_job_id,
                step_number=info["step"],
                metrics=CheckpointMetrics.model_validate(metrics),
            )
        )
    if after:
        ids = [c.id for c in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return ListOf[FineTuningJobCheckpoint](data=items[:limit], has_more=len(items) > limit)
