"""Training job use cases: validate and queue a job, read it and its events, cancel it."""

from __future__ import annotations

import builtins
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError

from openmaas.domain.entities import Dataset, Job, JobEvent, ModelVersion, Principal
from openmaas.domain.ids import new_id, now
from openmaas.domain.jobs import JobStatus
from openmaas.domain.refs import ROUTE_WORDS, is_valid_name
from openmaas.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from openmaas.recipes import CATALOG, ImageRecipe, Recipe, TextRecipe, UnknownRecipe, get_recipe
from openmaas.recipes.foundation import FOUNDATION_MODELS
from openmaas.services.idempotency import Idempotency, fingerprint
from openmaas.services.registry import RegistryService
from openmaas.services.tasks import described
from openmaas.storage.metadata import MetadataStore
from openmaas.storage.metadata.repositories import AlreadyExists
from openmaas.training.checkpoints import CheckpointStore
from openmaas.training.executors import Executor


def _hyperparameter_error(error: ValidationError) -> Unprocessable:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        message = f"unknown hyperparameter {where!r}"
    else:
        message = f"hyperparameter {where!r}: {first['msg']}"
    return Unprocessable(message, param=f"hyperparameters.{where}", code="invalid_hyperparameter")


def _check_dataset_kind(recipe: Recipe | TextRecipe | ImageRecipe, dataset: Dataset) -> None:
    if dataset.kind == recipe.dataset_kind:
        return
    if recipe.dataset_kind == "text":
        hint = "upload a .txt or .jsonl file with kind=text"
    elif recipe.dataset_kind == "image":
        hint = "upload a .zip of images with kind=image"
    elif dataset.kind == "image":
        hint = "an image dataset trains the image-cnn recipe"
    else:
        hint = "a text dataset trains the causal-lm and lora recipes"
    raise Unprocessable(
        f"recipe {recipe.name!r} trains on {recipe.dataset_kind} datasets, and dataset {dataset.id!r} is a "
        f"{dataset.kind} dataset: {hint}",
        param="dataset",
        code="wrong_dataset_kind",
    )


def check_image_base(reference: str, version: ModelVersion, shipped: tuple[str, ...]) -> None:
    """An image recipe builds on a Hugging Face image classifier (imported, or fine-tuned from one): a version
    made by our own image recipes from scratch has no such directory."""
    if "preprocessor_config.json" not in version.files or "config.json" not in version.files:
        raise Unprocessable(
            f"base_model {reference!r} is not a Hugging Face image classifier (imported with POST "
            f"/v1/models/import, or fine-tuned from one); or use {', '.join(repr(name) for name in shipped)}",
            param="hyperparameters.base_model",
            code="wrong_base_model_task",
        )


class JobService:
    def __init__(
        self,
        store: MetadataStore,
        executor: Executor,
        checkpoints: CheckpointStore,
        idempotency: Idempotency,
        registry: RegistryService,
        *,
        workers_limit: tuple[int, str] = (1, "the embedded server trains with one worker; set OPENMAAS_CLUSTER"),
    ) -> None:
        self.workers_limit = workers_limit  # the most `num_workers` a job may ask for here, and why not more
        self.store = store
        self.registry = registry
        self.executor = executor
        self.checkpoints = checkpoints
        self.idempotency = idempotency

    def create(
        self,
        principal: Principal,
        *,
        dataset_id: str,
        model: str,
        recipe: str,
        hyperparameters: dict[str, Any],
        priority: int = 0,
        idempotency_key: str | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Queue a job; `job_id` is given by a face that named the job before it existed (a fine-tune)."""
        self.idempotency.check(idempotency_key)
        request = fingerprint(dataset_id, model, recipe, hyperparameters, priority)
        if (first := self.idempotency.first_result(principal, "jobs", idempotency_key, request)) is not None:
            return self.get(principal, first)
        if not is_valid_name(model):
            raise InvalidRequest(
                f"invalid model name {model!r}: use letters, digits, '.', '_' or '-' (at most 128), "
                f"and not one of the route words ({', '.join(ROUTE_WORDS)})",
                param="model",
                code="invalid_model_name",
            )
        if model in FOUNDATION_MODELS:
            raise Conflict(
                f"{model!r} is a foundation model's name; choose another", param="model", code="reserved_model_name"
            )
        try:
            recipe_impl = get_recipe(recipe)
        except UnknownRecipe:
            raise Unprocessable(
                f"unknown recipe {recipe!r}; available: {', '.join(sorted(CATALOG))}",
                param="recipe",
                code="unknown_recipe",
            ) from None
        try:
            resolved = recipe_impl.hyperparameters(**hyperparameters).model_dump()
        except ValidationError as error:
            raise _hyperparameter_error(error) from None
        most, why = self.workers_limit
        if resolved["num_workers"] > most:
            raise Unprocessable(
                f"num_workers={resolved['num_workers']} is more than {most}: {why}",
                param="hyperparameters.num_workers",
                code="invalid_hyperparameter",
            )
        dataset = self.store.datasets.get(principal.tenant_id, dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id!r}", param="dataset", code="dataset_not_found")
        _check_dataset_kind(recipe_impl, dataset)
        if resolved.get("validation_dataset_id") is not None:
            validation = self.store.datasets.get(principal.tenant_id, resolved["validation_dataset_id"])
            if validation is None:
                raise NotFound(
                    f"no dataset {resolved['validation_dataset_id']!r}",
                    param="hyperparameters.validation_dataset_id",
                    code="dataset_not_found",
                )
            if validation.kind != dataset.kind:
                raise Unprocessable(
                    f"validation dataset {validation.id!r} is a {validation.kind} dataset, the training one "
                    f"{dataset.kind}",
                    param="hyperparameters.validation_dataset_id",
                    code="wrong_dataset_kind",
                )
        if recipe_impl.dataset_kind == "image":
            if "pinned_base" in resolved:
                resolved["pinned_base"] = None  # the server's to set, never the caller's
            if recipe_impl.base_task is not None and resolved["base_model"] not in recipe_impl.shipped_bases:
                base = self._base_version(principal, resolved["base_model"], recipe_impl.base_task)
                assert base is not None
                check_image_base(resolved["base_model"], base, recipe_impl.shipped_bases)
                resolved["pinned_base"] = self._pin(base)
        elif recipe_impl.base_task is not None:
            # A classifier's encoder is read from the shipped package: one this server does not offer is checked
            # against the catalog; a language model's base is pinned, so it must be in the registry.
            base = self._base_version(
                principal, resolved["base_model"], recipe_impl.base_task, shipped=recipe_impl.dataset_kind != "text"
            )
            if recipe_impl.dataset_kind == "text":
                assert base is not None
                resolved["pinned_base"] = self._pin(base)
        job = Job(
            id=job_id or new_id("job"),
            tenant_id=principal.tenant_id,
            model=model,
            dataset_id=dataset_id,
            recipe=recipe,
            hyperparameters=resolved,
            status=JobStatus.QUEUED,
            created_at=now(),
            priority=priority,
        )
        try:
            self.store.jobs.add(job, (idempotency_key, request) if idempotency_key else None)
        except AlreadyExists:  # the same key arrived twice at once: the other request won
            if idempotency_key is None and job_id is not None:  # its face created the job it named meanwhile
                return self.get(principal, job_id)
            first = self.idempotency.first_result(principal, "jobs", idempotency_key, request)
            assert first is not None
            return self.get(principal, first)
        self.executor.wake()
        return job

    def _base_version(
        self, principal: Principal, reference: str, task: str, *, shipped: bool = False
    ) -> ModelVersion | None:
        """The version `base_model` names for the caller now, refused unless it is a model of the kind the
        recipe builds on (a chat model under a classifier would fail only later, in the worker). With
        `shipped`, a foundation model the registry does not hold is checked against the catalog (None)."""
        param = "hyperparameters.base_model"
        version: ModelVersion | None = None
        try:
            version = self.registry.resolve(principal, reference)
            found = version.task
        except NotFound:
            if not (shipped and reference in FOUNDATION_MODELS):
                raise NotFound(
                    f"no model version matches base_model {reference!r}", param=param, code="model_not_found"
                ) from None
            found = FOUNDATION_MODELS[reference].task
        except InvalidRequest as error:
            raise InvalidRequest(error.message, param=param, code=error.code) from None
        if found != task:
            raise Unprocessable(
                f"base_model {reference!r} is {described(found)}; this recipe builds on {described(task)}",
                param=param,
                code="wrong_base_model_task",
            )
        if version is not None and any(name.startswith("adapter/") for name in version.files):
            raise InvalidRequest(
                f"base_model {reference!r} is a LoRA adapter on top of another model; fine-tune a merged version "
                "(trained with merge: true) or its base",
                param=param,
                code="adapter_as_base",
            )
        return version

    def _pin(self, version: ModelVersion) -> dict[str, Any]:
        """The exact version the job trains on, even if aliases move before it runs."""
        owner = self.store.tenants.get(version.tenant_id)
        assert owner is not None  # a model's tenant outlives it
        return {
            "owner": owner.name,
            "model": version.model,
            "version": version.version,
            "artifact_sha256": version.artifact_sha256,
        }

    def get(self, principal: Principal, job_id: str) -> Job:
        job = self.store.jobs.get(principal.tenant_id, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", param="job_id", code="job_not_found")
        return job

    def list(
        self, principal: Principal, *, after: str | None, limit: int, status: JobStatus | None
    ) -> tuple[list[Job], bool]:
        return self.store.jobs.list(
            principal.tenant_id, after=after, limit=limit, statuses=[status] if status else None
        )

    def events(
        self, principal: Principal, job_id: str, *, after: int, limit: int
    ) -> tuple[builtins.list[JobEvent], bool]:
        self.get(principal, job_id)
        return self.store.jobs.events(job_id, after=after, limit=limit)

    def list_checkpoints(self, principal: Principal, job_id: str) -> builtins.list[dict[str, Any]]:
        self.get(principal, job_id)
        return [asdict(info) for info in self.checkpoints.list(job_id)]

    def is_finished(self, job_id: str) -> bool:
        job = self.store.jobs.get(None, job_id)
        return job is None or job.status.is_terminal

    def cancel(self, principal: Principal, job_id: str) -> Job:
        job = self.get(principal, job_id)
        if job.status.is_terminal:
            raise Conflict(f"job {job_id!r} is already {job.status.value}", param="job_id", code="job_finished")
        self.store.jobs.request_cancel(job_id)
        queued_only = [JobStatus.QUEUED]
        if self.store.jobs.transition(
            job_id, JobStatus.CANCELLED, only_from=queued_only, reason="cancelled by the user"
        ):
            self.store.jobs.add_event(job_id, "cancelled", {})
        else:
            self.executor.cancel(job_id)  # running: the worker stops at its next step and records it
        return self.get(principal, job_id)
