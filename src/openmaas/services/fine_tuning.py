"""OpenAI's fine-tuning jobs as a second face on our training jobs: the model picks the recipe, the file becomes a
dataset, OpenAI's hyperparameters become the recipe's; the job itself is JobService's, and /v1/jobs shows it too.

Model → recipe: `bow-mlp` → bow-mlp; the shipped encoder (a foundation model for embeddings) → transformer-
classifier on {"text", "label"} rows; a text-generation model of the registry → lora on {"messages"} rows;
`efficientnet-lite0` → image-classifier and `image-cnn` → image-cnn, on a zip of labelled images (IMAGE_MODELS).

The process validating a fine-tune's files holds its lease (storage/metadata/fine_tunes.py) and renews it while
it reads them. A crash leaves the fine-tune `validating_files`: `resume_validations` (run at start-up and every
third of the lease) validates it again from the start, in the restarted process at once (its holder is known
dead) or in another server sharing the database once the lease expired. Validation only reads the files; what
it writes is keyed by the fine-tune (its dataset's idempotency key, its job's id), so running it again stores
no second dataset, creates no second job and reports its data once.
"""

from __future__ import annotations

import asyncio
import builtins
import csv
import functools
import io
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from openmaas.domain.entities import Dataset, File, FineTune, Job, JobEvent, Principal
from openmaas.domain.ids import new_id, now
from openmaas.domain.jobs import JobStatus
from openmaas.domain.refs import fine_tuned_model_id
from openmaas.errors import Conflict, InvalidRequest, NotFound, OpenMaaSError, PayloadTooLarge, Unprocessable
from openmaas.recipes import get_recipe
from openmaas.recipes.foundation import FOUNDATION_MODELS
from openmaas.recipes.token_counts import (
    WEIGHT_SUFFIXES,
    TokenCounter,
    bow_counter,
    causal_counter,
    encoder_counter,
)
from openmaas.services.data_report import data_report, estimate, image_data_report, measured_speed, trained_tokens
from openmaas.services.datasets import DatasetService
from openmaas.services.files import FileService
from openmaas.services.jobs import JobService
from openmaas.services.registry import RegistryService
from openmaas.storage.metadata import MetadataStore
from openmaas.training.executors.owners import is_gone, this_process

log = logging.getLogger(__name__)

AUTO = "auto"
# Image models a fine-tune names → (recipe, the recipe's base hyperparameters); the file is an image zip.
IMAGE_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "efficientnet-lite0": ("image-classifier", {"base_model": "efficientnet-lite0"}),
    "image-cnn": ("image-cnn", {}),
}
RESULT_COLUMNS = ("step", "epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy")


@dataclass(frozen=True)
class FineTuningJobView:
    """A fine-tune with its training job (None while its files are validated, or when they were unusable), its
    OpenAI status and error, and, as they become known, its model's name, the tokens it trained on and when it
    should finish."""

    job: Job | None
    fine_tune: FineTune
    fine_tuned_model: str | None
    status: str
    error: dict[str, Any] | None = None
    trained_tokens: int | None = None
    estimated_finish: float | None = None


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


class FineTuningService:
    def __init__(
        self,
        store: MetadataStore,
        jobs: JobService,
        datasets: DatasetService,
        files: FileService,
        registry: RegistryService,
        *,
        node: str = "localhost",
        lease_s: float = 30.0,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.datasets = datasets
        self.files = files
        self.registry = registry
        self.node = node
        self.owner = this_process(node)
        self.lease_s = lease_s

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
        validation_file: str | None = None,
        n_epochs: int | str = AUTO,
        batch_size: int | str = AUTO,
        learning_rate_multiplier: float | str = AUTO,
        suffix: str | None = None,
        seed: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> FineTuningJobView:
        """Check the request (a 4xx when it is wrong), then validate the files while the fine-tune is
        `validating_files`: an unusable file fails it there, with the line and the reason, before any compute;
        a usable one gets its data report and queues the training job."""
        recipe, kind, hyperparameters, resolved = self._plan(
            principal, model, n_epochs, batch_size, learning_rate_multiplier, seed
        )
        multiplier = 1.0 if learning_rate_multiplier == AUTO else float(learning_rate_multiplier)
        files = {"training_file": self._fine_tune_file(principal, training_file, "training_file")}
        if validation_file is not None:
            files["validation_file"] = self._fine_tune_file(principal, validation_file, "validation_file")
        fine_tune = FineTune(
            job_id=new_id("job"),
            tenant_id=principal.tenant_id,
            base_model=model,
            training_file=training_file,
            suffix=suffix,
            seed=resolved.seed,
            metadata=metadata,
            hyperparameters={
                "n_epochs": resolved.epochs,
                "batch_size": resolved.batch_size,
                "learning_rate_multiplier": multiplier,
            },
            created_at=now(),
            status="validating_files",
            validation_file=validation_file,
        )
        self.store.fine_tunes.add(fine_tune, owner=self.owner, lease_s=self.lease_s)
        self._validating(fine_tune, lambda: self._validate(principal, fine_tune, recipe, kind, hyperparameters, files))
        return self.get(principal, fine_tune.job_id)

    def _plan(
        self,
        principal: Principal,
        model: str,
        n_epochs: int | str,
        batch_size: int | str,
        learning_rate_multiplier: float | str,
        seed: int | None,
    ) -> tuple[str, str, dict[str, Any], Any]:
        """(recipe, dataset kind, the job's hyperparameters, the recipe's resolution of them)."""
        recipe, kind, hyperparameters = self.recipe_for(principal, model)
        defaults = get_recipe(recipe).hyperparameters(**hyperparameters)
        if n_epochs != AUTO:
            hyperparameters["epochs"] = n_epochs
        if batch_size != AUTO:
            hyperparameters["batch_size"] = batch_size
        multiplier = 1.0 if learning_rate_multiplier == AUTO else float(learning_rate_multiplier)
        hyperparameters["learning_rate"] = defaults.learning_rate * multiplier
        hyperparameters["seed"] = seed if seed is not None else defaults.seed
        try:
            resolved = get_recipe(recipe).hyperparameters(**hyperparameters)
        except ValidationError as error:
            first = error.errors()[0]
            raise Unprocessable(
                f"hyperparameters: {first['msg']}", param="hyperparameters", code="invalid_hyperparameter"
            ) from None
        return recipe, kind, hyperparameters, resolved

    def _validating(self, fine_tune: FineTune, validate: Callable[[], None]) -> None:
        """Run `validate` holding the fine-tune's lease; an unusable file (or model) fails the fine-tune, with
        the file's line and reason, unless an earlier run had already created its job (it follows its job)."""
        job_id = fine_tune.job_id
        with self._renewing(job_id):
            try:
                validate()
            except OpenMaaSError as error:
                if self.store.jobs.get(fine_tune.tenant_id, job_id) is not None:
                    self.store.fine_tunes.validated(job_id, report=None, error=None, owner=self.owner)
                    return
                named = ("training_file", "validation_file") if fine_tune.validation_file else ("training_file",)
                param = error.param if error.param in named else "training_file"
                failure = {"code": error.code or "invalid_file", "message": error.message, "param": param}
                self.store.fine_tunes.validated(job_id, report=None, error=failure, owner=self.owner)

    @contextmanager
    def _renewing(self, job_id: str) -> Iterator[None]:
        """Renew the fine-tune's lease every third of it while validation runs (a large file takes a while)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    self.store.fine_tunes.claim(job_id, self.owner, self.lease_s)
                except Exception:  # the database away for a moment: tried again at the next third
                    log.exception("renewing the lease of fine-tune %s failed", job_id)

        renewing = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
        renewing.start()
        try:
            yield
        finally:
            stop.set()
            renewing.join()

    def resume_validations(self) -> int:
        """Validate again every fine-tune left `validating_files` by a process that died (or whose lease
        expired), each in the process that wins its lease; the number this process took."""
        taken = 0
        for fine_tune, holder in self.store.fine_tunes.validating():
            if holder == self.owner:
                continue  # this process's own request validates it now
            job_id = fine_tune.job_id
            if not self.store.fine_tunes.claim(job_id, self.owner, self.lease_s) and not (
                is_gone(holder, self.node)
                and self.store.fine_tunes.claim(job_id, self.owner, self.lease_s, take_from=holder)
            ):
                continue  # its holder still validates it, or another process took it first
            log.warning("validating the files of fine-tune %s again (its process %s stopped)", job_id, holder)
            taken += 1
            try:
                self._validating(fine_tune, functools.partial(self._validate_again, fine_tune))
            except Exception:  # our bug (or the database gone): logged; its lease expires and it is tried again
                log.exception("validating the files of fine-tune %s again failed", job_id)
        return taken

    async def run(self) -> None:
        """Validate again what a stopped process left `validating_files`: at start-up, then every third of the
        lease (another server's lease may expire while this one runs)."""
        while True:
            try:
                await asyncio.to_thread(self.resume_validations)
            except Exception:  # the database away for a moment: logged, tried again
                log.exception("resuming fine-tunes' validations failed")
            await asyncio.sleep(self.lease_s / 3)

    def _validate_again(self, fine_tune: FineTune) -> None:
        """The validation of `create`, from the fine-tune's record: the hyperparameters it recorded as resolved
        resolve to the same, and a file or model deleted meanwhile fails it as a request would have been."""
        tenant = self.store.tenants.get(fine_tune.tenant_id)
        limits = tenant.limits if tenant is not None else {}
        principal = Principal(tenant_id=fine_tune.tenant_id, key_id="fine-tune", tenant_limits=limits)
        hp = fine_tune.hyperparameters
        recipe, kind, hyperparameters, _ = self._plan(
            principal,
            fine_tune.base_model,
            hp["n_epochs"],
            hp["batch_size"],
            hp["learning_rate_multiplier"],
            fine_tune.seed,
        )
        files = {"training_file": self._fine_tune_file(principal, fine_tune.training_file, "training_file")}
        if fine_tune.validation_file is not None:
            files["validation_file"] = self._fine_tune_file(principal, fine_tune.validation_file, "validation_file")
        self._validate(principal, fine_tune, recipe, kind, hyperparameters, files)

    def _fine_tune_file(self, principal: Principal, file_id: str, param: str) -> File:
        try:
            file = self.files.get(principal, file_id)
        except NotFound as error:
            raise NotFound(error.message, param=param, code=error.code) from None
        if file.purpose != "fine-tune":
            raise InvalidRequest(
                f"file {file_id!r} was uploaded for {file.purpose!r}, not 'fine-tune'",
                param=param,
                code="invalid_file_purpose",
            )
        return file

    def _dataset_of(self, principal: Principal, fine_tune: FineTune, file: File, kind: str, param: str) -> Dataset:
        _, data = self.files.content(principal, file.id)
        if kind == "image":  # a zip keeps its name: the dataset reader knows it by its suffix
            filename = file.filename
        else:
            filename = file.filename if file.filename.endswith(".jsonl") else f"{file.id}.jsonl"
        try:
            # Keyed by the fine-tune: validating it again after a crash finds the dataset the first run stored.
            return self.datasets.upload(
                principal,
                name=f"fine-tune {file.id}",
                filename=filename,
                data=data,
                kind=kind,
                idempotency_key=f"fine-tune {fine_tune.job_id} {param}",
            )
        except OpenMaaSError as error:  # the file's line and reason, named as the client knows the file
            code = error.code if error.code and error.code != "invalid_request" else f"invalid_{param}"
            raise type(error)(f"{param} {file.id!r}: {error.message}", param=param, code=code) from None

    def _rows(self, dataset: Dataset) -> builtins.list[dict[str, Any]]:
        return [json.loads(line) for line in self.datasets.artifacts.read_bytes(dataset.sha256).splitlines() if line]

    def _validate(
        self,
        principal: Principal,
        fine_tune: FineTune,
        recipe: str,
        kind: str,
        hyperparameters: dict[str, Any],
        files: dict[str, File],
    ) -> None:
        dataset = self._dataset_of(principal, fine_tune, files["training_file"], kind, "training_file")
        validation_rows = None
        if "validation_file" in files:
            validation = self._dataset_of(principal, fine_tune, files["validation_file"], kind, "validation_file")
            hyperparameters["validation_dataset_id"] = validation.id
            validation_rows = validation.rows
        resolved = get_recipe(recipe).hyperparameters(**hyperparameters)
        train_fraction = 1.0 if validation_rows is not None else 1.0 - resolved.validation_split
        if kind == "image":
            report = image_data_report(dataset, resolved.epochs, train_fraction, validation_rows)
        else:
            report = data_report(
                self._rows(dataset),
                dataset.report.get("dropped", {}),
                self._token_counter(principal, recipe, resolved),
                resolved.epochs,
                validation_rows=validation_rows,
                train_fraction=train_fraction,
            )
        report = estimate(report, measured_speed(self.store.fine_tunes.measured(recipe)))
        report["validated_at"] = now()
        job_id = fine_tune.job_id
        if not self.store.fine_tunes.claim(job_id, self.owner, self.lease_s):
            return  # another process took it over (this one stalled past its lease): that one finishes it
        # A run before a crash may have created the job (and reported) already; the job's id is the fine-tune's,
        # so of two runs at once only one creates it (the other gets the job).
        if self.store.jobs.get(fine_tune.tenant_id, job_id) is None:
            self.jobs.create(
                principal,
                dataset_id=dataset.id,
                model=new_id("ft"),
                recipe=recipe,
                hyperparameters=hyperparameters,
                job_id=job_id,
            )
        events, _ = self.store.jobs.events(job_id)
        if not any(event.type == "data_report" for event in events):
            self.store.jobs.add_event(job_id, "data_report", report)
        self.store.fine_tunes.validated(job_id, report=report, error=None, owner=self.owner)

    def _token_counter(self, principal: Principal, recipe: str, hp: Any) -> TokenCounter:
        if recipe == "bow-mlp":
            return bow_counter()
        if recipe == "transformer-classifier":
            return encoder_counter(hp.base_model, hp.max_length)
        version = self.registry.resolve(principal, hp.base_model)
        tokenizer_files = {n: sha for n, sha in version.files.items() if not n.endswith(WEIGHT_SUFFIXES)}
        with tempfile.TemporaryDirectory(dir=self.datasets.artifacts.scratch) as scratch:
            directory = self.datasets.artifacts.materialize(tokenizer_files, Path(scratch) / "tokenizer")
            return causal_counter(directory, hp.base_model, hp.context_length)

    def get(self, principal: Principal, job_id: str) -> FineTuningJobView:
        fine_tune = self.store.fine_tunes.get(principal.tenant_id, job_id)
        if fine_tune is None:
            raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id", code="job_not_found")
        return self._view(principal, fine_tune)

    def list(self, principal: Principal, *, after: str | None, limit: int) -> tuple[list[FineTuningJobView], bool]:
        fine_tunes, more = self.store.fine_tunes.list(principal.tenant_id, after=after, limit=limit)
        return [self._view(principal, f) for f in fine_tunes], more

    def cancel(self, principal: Principal, job_id: str) -> FineTuningJobView:
        view = self.get(principal, job_id)
        if view.job is None:
            raise Conflict(
                f"fine-tuning job {job_id!r} is {view.status}", param="fine_tuning_job_id", code="job_finished"
            )
        self.jobs.cancel(principal, job_id)
        return self.get(principal, job_id)

    def events(
        self, principal: Principal, job_id: str, *, after: int, limit: int
    ) -> tuple[builtins.list[JobEvent], bool]:
        view = self.get(principal, job_id)
        if view.job is None:  # failed validation: no training job, so its one event is told from the fine-tune
            created = view.fine_tune.created_at or 0.0
            error = view.error or {}
            data = {"reason": error.get("message"), "code": error.get("code"), "param": error.get("param")}
            found = [JobEvent(1, job_id, "failed", data, created)] if view.status == "failed" else []
            return [e for e in found if e.id > after][:limit], False
        return self.jobs.events(principal, job_id, after=after, limit=limit)

    def checkpoints(self, principal: Principal, job_id: str) -> builtins.list[dict[str, Any]]:
        """The job's kept checkpoints, oldest first, and its final state as the last one once it succeeded (as
        OpenAI lists it: that one is the fine-tuned model)."""
        job = self.get(principal, job_id).job
        if job is None:
            return []
        found = self.jobs.list_checkpoints(principal, job_id)
        steps = job.metrics.get("steps")
        if job.status is JobStatus.SUCCEEDED and steps and all(c["step"] != steps for c in found):
            history = job.metrics.get("history") or [{}]
            found.append({"step": steps, "created_at": job.finished_at or job.created_at, "metrics": history[-1]})
        return found

    def model_name(self, principal: Principal, fine_tune: FineTune) -> str:
        """`ft:{base}:{tenant}:{suffix}:{job}`: the fine-tuned model's id once it succeeded, and the stem of its
        checkpoints' ids (`…:ckpt-step-N`) before."""
        tenant = self.store.tenants.get(principal.tenant_id)
        assert tenant is not None  # the caller's own tenant
        return fine_tuned_model_id(fine_tune.base_model, tenant.name, fine_tune.suffix, fine_tune.job_id)

    def _view(self, principal: Principal, fine_tune: FineTune) -> FineTuningJobView:
        job = None if fine_tune.status is not None else self.store.jobs.get(principal.tenant_id, fine_tune.job_id)
        if job is None:
            status = fine_tune.status or "validating_files"
            return FineTuningJobView(None, fine_tune, None, status, fine_tune.error)
        name = None
        if job.status is JobStatus.SUCCEEDED and job.model_version is not None:
            name = self.model_name(principal, fine_tune)
        if job.status.is_terminal and fine_tune.result_file is None:
            fine_tune = self._write_results(principal, job, fine_tune)
        error = None
        if job.status is JobStatus.FAILED:
            error = {"code": "job_failed", "message": job.reason or "the job failed", "param": None}
        report = fine_tune.report or {}
        finish = None
        if not job.status.is_terminal and report.get("estimated_seconds") is not None:
            finish = (job.started_at or report.get("validated_at") or job.created_at) + report["estimated_seconds"]
        tokens = trained_tokens(report, job.metrics) if job.status is JobStatus.SUCCEEDED else None
        return FineTuningJobView(job, fine_tune, name, job.status.value, error, tokens, finish)

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
