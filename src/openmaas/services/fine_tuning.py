"""OpenAI's fine-tuning jobs as a second face on our training jobs: the model picks the recipe, the file becomes a
dataset, OpenAI's hyperparameters become the recipe's; the job itself is JobService's, and /v1/jobs shows it too.

Model → recipe: `bow-mlp` → bow-mlp; the shipped encoder (a foundation model for embeddings) → transformer-
classifier on {"text", "label"} rows; a text-generation model of the registry → lora on {"messages"} rows;
`efficientnet-lite0` → image-classifier and `image-cnn` → image-cnn, on a zip of labelled images (IMAGE_MODELS).
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from openmaas.domain.entities import Dataset, FineTune, Job, JobEvent, Principal
from openmaas.domain.ids import new_id
from openmaas.domain.jobs import JobStatus
from openmaas.domain.refs import fine_tuned_model_id
from openmaas.errors import InvalidRequest, NotFound, OpenMaaSError, PayloadTooLarge, Unprocessable
from openmaas.recipes import get_recipe
from openmaas.recipes.foundation import FOUNDATION_MODELS
from openmaas.services.datasets import DatasetService
from openmaas.services.files import FileService
from openmaas.services.jobs import JobService
from openmaas.services.registry import RegistryService
from openmaas.storage.metadata import MetadataStore

AUTO = "auto"
# Image models a fine-tune names → (recipe, the recipe's base hyperparameters); the file is an image zip.
IMAGE_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "efficientnet-lite0": ("image-classifier", {"base_model": "efficientnet-lite0"}),
    "image-cnn": ("image-cnn", {}),
}
RESULT_COLUMNS = ("step", "epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy")


@dataclass(frozen=True)
class FineTuningJobView:
    """A training job with its OpenAI face, and the name of its model once there is one."""

    job: Job
    fine_tune: FineTune
    fine_tuned_model: str | None


def result_rows(events: list[JobEvent]) -> list[dict[str, Any]]:
    """The step metrics of a job's events: one row per `step` event (train loss) and per `epoch` event (the
    epoch's losses and accuracies, validation included)."""
    rows = []
    for event in events:
        data = event.data
        if event.type == "step":
            rows.append({"step": data.get("step"), "epoch": data.get("epoch"), "train_loss": data.get("loss")})
        elif event.type == "epoch":
            rows.append(
                {
                    "step": data.get("step"),
                    "epoch": data.get("epoch"),
                    "train_loss": data.get("train_loss"),
                    "train_accuracy": data.get("train_accuracy"),
                    "valid_loss": data.get("val_loss"),
                    "valid_accuracy": data.get("val_accuracy"),
                }
            )
    return rows


def _text_of(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "\n".join(str(message.get("content", "")) for message in row["messages"])
    return str(row.get("text", ""))


def data_report(
    rows: list[dict[str, Any]], dropped: dict[str, Any], epochs: int, context: int | None
) -> dict[str, Any]:
    """What a job will train on, before any compute: rows, words per example, label balance, duplicates (exact
    ones were dropped when the file was read; near ones differ only in case, spacing or punctuation), texts with
    conflicting labels, examples over the context (in words, which undercount tokens), and the words to train on."""
    texts = [_text_of(row) for row in rows]
    words = sorted(len(text.split()) for text in texts)
    near: dict[str, set[str]] = {}
    for text, row in zip(texts, rows, strict=True):
        key = " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())
        near.setdefault(key, set()).add(str(row.get("label")))
    report: dict[str, Any] = {
        "rows": len(rows),
        "words_per_example": {"min": words[0], "median": statistics.median(words), "max": words[-1]} if words else None,
        "exact_duplicates_dropped": dropped.get("duplicate", {}).get("count", 0),
        "near_duplicates": len(rows) - len(near),
        "estimated_trained_words": sum(words) * epochs,
    }
    if any("label" in row for row in rows):
        report["label_balance"] = dict(Counter(str(row["label"]) for row in rows).most_common())
        report["conflicting_labels"] = sum(len(labels) > 1 for labels in near.values())
    if context is not None:
        report["context"] = context
        report["over_context"] = sum(count > context for count in words)
    return report


def image_data_report(dataset: Dataset, epochs: int) -> dict[str, Any]:
    """What an image job will train on, from the dataset's own report: images, label balance, sizes, duplicates."""
    report = dataset.report
    return {
        "rows": dataset.rows,
        "label_balance": dict(sorted(dataset.labels.items(), key=lambda item: -item[1])),
        "width": report.get("width"),
        "height": report.get("height"),
        "exact_duplicates_dropped": report.get("dropped", {}).get("duplicate", {}).get("count", 0),
        "estimated_trained_images": dataset.rows * epochs,
    }


class FineTuningService:
    def __init__(
        self,
        store: MetadataStore,
        jobs: JobService,
        datasets: DatasetService,
        files: FileService,
        registry: RegistryService,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.datasets = datasets
        self.files = files
        self.registry = registry

    def recipe_for(self, principal: Principal, model: str) -> tuple[str, str, dict[str, Any]]:
        """(recipe, dataset kind, the recipe's base hyperparameters) for the model a client names."""
        if model == "bow-mlp":
            return "bow-mlp", "classification", {}
        if model in IMAGE_MODELS:
            recipe, base = IMAGE_MODELS[model]
            return recipe, "image", dict(base)
        foundation = FOUNDATION_MODELS.get(model)
        if foundation is not None and foundation.task == "embeddings":
            return "transformer-classifier", "classification", {"base_model": model}
        try:
            version = self.registry.resolve(principal, model)
        except (NotFound, InvalidRequest):
            raise NotFound(
                f"no model {model!r} to fine-tune: name 'bow-mlp', the shipped encoder, a text-generation model, "
                "'efficientnet-lite0' or 'image-cnn'",
                param="model",
                code="model_not_found",
            ) from None
        if version.task != "text-generation":
            raise Unprocessable(
                f"model {model!r} is a {version.task} model; fine-tune 'bow-mlp', the shipped encoder or a "
                "text-generation model",
                param="model",
                code="model_not_fine_tunable",
            )
        return "lora", "text", {"base_model": model}

    def create(
        self,
        principal: Principal,
        *,
        model: str,
        training_file: str,
        n_epochs: int | str = AUTO,
        batch_size: int | str = AUTO,
        learning_rate_multiplier: float | str = AUTO,
        suffix: str | None = None,
        seed: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> FineTuningJobView:
        recipe, kind, hyperparameters = self.recipe_for(principal, model)
        defaults = get_recipe(recipe).hyperparameters(**hyperparameters)
        if n_epochs != AUTO:
            hyperparameters["epochs"] = n_epochs
        if batch_size != AUTO:
            hyperparameters["batch_size"] = batch_size
        multiplier = 1.0 if learning_rate_multiplier == AUTO else float(learning_rate_multiplier)
        hyperparameters["learning_rate"] = defaults.learning_rate * multiplier
        hyperparameters["seed"] = seed if seed is not None else defaults.seed
        file = self.files.get(principal, training_file)
        if file.purpose != "fine-tune":
            raise InvalidRequest(
                f"file {training_file!r} was uploaded for {file.purpose!r}, not 'fine-tune'",
                param="training_file",
                code="invalid_file_purpose",
            )
        _, data = self.files.content(principal, training_file)
        if kind == "image":
            filename = file.filename
        else:
            filename = file.filename if file.filename.endswith(".jsonl") else f"{file.id}.jsonl"
        try:
            dataset = self.datasets.upload(
                principal, name=f"fine-tune {file.id}", filename=filename, data=data, kind=kind
            )
        except OpenMaaSError as error:  # the file's line and reason, named as the client knows the file
            raise type(error)(
                f"training_file {training_file!r}: {error.message}", param="training_file", code=error.code
            ) from None
        job = self.jobs.create(
            principal, dataset_id=dataset.id, model=new_id("ft"), recipe=recipe, hyperparameters=hyperparameters
        )
        if kind == "image":
            report = image_data_report(dataset, job.hyperparameters["epochs"])
        else:
            blob = self.datasets.artifacts.read_bytes(dataset.sha256)
            rows = [json.loads(line) for line in blob.splitlines() if line]
            context = job.hyperparameters.get("context_length") or job.hyperparameters.get("max_length")
            report = data_report(rows, dataset.report.get("dropped", {}), job.hyperparameters["epochs"], context)
        self.store.jobs.add_event(job.id, "data_report", report)
        fine_tune = FineTune(
            job_id=job.id,
            tenant_id=principal.tenant_id,
            base_model=model,
            training_file=training_file,
            suffix=suffix,
            seed=job.hyperparameters["seed"],
            metadata=metadata,
            hyperparameters={
                "n_epochs": job.hyperparameters["epochs"],
                "batch_size": job.hyperparameters["batch_size"],
                "learning_rate_multiplier": multiplier,
            },
        )
        self.store.fine_tunes.add(fine_tune)
        return self._view(principal, job, fine_tune)

    def get(self, principal: Principal, job_id: str) -> FineTuningJobView:
        fine_tune = self.store.fine_tunes.get(principal.tenant_id, job_id)
        if fine_tune is None:
            raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id", code="job_not_found")
        return self._view(principal, self.jobs.get(principal, job_id), fine_tune)

    def list(self, principal: Principal, *, after: str | None, limit: int) -> tuple[list[FineTuningJobView], bool]:
        fine_tunes, more = self.store.fine_tunes.list(principal.tenant_id, after=after, limit=limit)
        return [self._view(principal, self.jobs.get(principal, f.job_id), f) for f in fine_tunes], more

    def cancel(self, principal: Principal, job_id: str) -> FineTuningJobView:
        self.get(principal, job_id)
        self.jobs.cancel(principal, job_id)
        return self.get(principal, job_id)

    def events(
        self, principal: Principal, job_id: str, *, after: int, limit: int
    ) -> tuple[builtins.list[JobEvent], bool]:
        self.get(principal, job_id)
        return self.jobs.events(principal, job_id, after=after, limit=limit)

    def checkpoints(self, principal: Principal, job_id: str) -> builtins.list[dict[str, Any]]:
        self.get(principal, job_id)
        return self.jobs.list_checkpoints(principal, job_id)

    def _view(self, principal: Principal, job: Job, fine_tune: FineTune) -> FineTuningJobView:
        name = None
        if job.status is JobStatus.SUCCEEDED and job.model_version is not None:
            tenant = self.store.tenants.get(principal.tenant_id)
            assert tenant is not None  # the caller's own tenant
            name = fine_tuned_model_id(fine_tune.base_model, tenant.name, fine_tune.suffix, job.id)
        if job.status.is_terminal and fine_tune.result_file is None:
            fine_tune = self._write_results(principal, job, fine_tune)
        return FineTuningJobView(job, fine_tune, name)

    def _write_results(self, principal: Principal, job: Job, fine_tune: FineTune) -> FineTune:
        """The CSV of the step metrics, written the first time the finished job is read."""
        events, more, after = [], True, 0
        while more:
            page, more = self.store.jobs.events(job.id, after=after, limit=1000)
            events += page
            after = page[-1].id if page else after
        out = io.StringIO()
        writer = csv.DictWriter(out, RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result_rows(events))
        try:
            file = self.files.write(
                principal, filename=f"{job.id}-results.csv", purpose="fine-tune-results", data=out.getvalue().encode()
            )
        except PayloadTooLarge:  # over the tenant's storage quota: no results file (the events hold the metrics)
            return fine_tune
        if not self.store.fine_tunes.set_result_file(job.id, file.id):  # another request wrote it first
            self.files.delete(principal, file.id)
        found = self.store.fine_tunes.get(principal.tenant_id, job.id)
        assert found is not None
        return found
