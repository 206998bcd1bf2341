"""The server's one-request, one-JSON-answer routes, written once for the sync and the async client.

Each method builds its request and hands it to `_call` (an object) or `_call_list` (a list's `data`); the
sync client answers with the value, the async one with an awaitable of it. Streams, uploads, downloads
and paging need a loop of their own and live in each client.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

Obj = TypeVar("Obj")
Objs = TypeVar("Objs")
Message = dict[str, Any]


def without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def chat_body(model: str, messages: Sequence[Message], options: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": list(messages), **options, "stream": stream}


def completion_body(model: str, prompt: str, options: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, **options, "stream": stream}


def image_inputs(images: Sequence[bytes]) -> list[dict[str, str]]:
    return [{"image": base64.b64encode(image).decode()} for image in images]


def import_path(path: str | Path) -> str:
    """A directory that exists here is sent as an absolute path (the server resolves nothing against its own
    working directory); anything else goes as written, so the server can say what it is (a Hub id, say)."""
    local = Path(path)
    return str(local.resolve()) if local.exists() else str(path)


class Routes(ABC, Generic[Obj, Objs]):
    @abstractmethod
    def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Obj: ...

    @abstractmethod
    def _call_list(self, method: str, path: str, *, params: dict[str, Any] | None = None) -> Objs: ...

    # the caller
    def me(self) -> Obj:
        """The calling key's tenant (id and name), scopes and limits."""
        return self._call("GET", "/v1/me")

    def list_recipes(self) -> Objs:
        """Each recipe's dataset kind and hyperparameters (a JSON Schema with defaults, bounds and help)."""
        return self._call_list("GET", "/v1/recipes")

    def cluster(self) -> Obj:
        """Where jobs and models run (admin): `embedded`, or the Ray cluster's nodes, resources and replicas."""
        return self._call("GET", "/v1/cluster")

    # datasets
    def dataset_samples(self, dataset_id: str, *, per_class: int | None = None) -> Objs:
        """A few thumbnails per class of an image dataset (PNG `data:` URLs)."""
        params = without_none({"per_class": per_class})
        return self._call_list("GET", f"/v1/datasets/{dataset_id}/samples", params=params)

    def dataset_rows(self, dataset_id: str, *, limit: int | None = None) -> Obj:
        """The first cleaned rows of a dataset, as training reads them."""
        return self._call("GET", f"/v1/datasets/{dataset_id}/rows", params=without_none({"limit": limit}))

    def get_dataset(self, dataset_id: str) -> Obj:
        return self._call("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> Obj:
        return self._call("DELETE", f"/v1/datasets/{dataset_id}")

    # training jobs
    def create_job(
        self,
        dataset: str,
        model: str,
        *,
        recipe: str = "bow-mlp",
        hyperparameters: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> Obj:
        body = {"dataset": dataset, "model": model, "recipe": recipe, "hyperparameters": hyperparameters or {}}
        return self._call("POST", "/v1/jobs", json=without_none({**body, "priority": priority}))

    def list_jobs(self, status: str | None = None, limit: int = 100, after: str | None = None) -> Objs:
        return self._call_list(
            "GET", "/v1/jobs", params=without_none({"limit": limit, "status": status, "after": after})
        )

    def get_job(self, job_id: str) -> Obj:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> Obj:
        """A queued job answers `cancelled`; a running one still `running` (it stops at its next step)."""
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def job_events(self, job_id: str, after: int = 0, limit: int = 1000) -> Objs:
        return self._call_list("GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": limit})

    def job_checkpoints(self, job_id: str) -> Objs:
        return self._call_list("GET", f"/v1/jobs/{job_id}/checkpoints")

    # OpenAI's files, fine-tuning jobs and batches (uploads and downloads are each client's)
    def list_files(self, purpose: str | None = None, limit: int = 10_000, after: str | None = None) -> Objs:
        return self._call_list(
            "GET", "/v1/files", params=without_none({"purpose": purpose, "limit": limit, "after": after})
        )

    def get_file(self, file_id: str) -> Obj:
        return self._call("GET", f"/v1/files/{file_id}")

    def delete_file(self, file_id: str) -> Obj:
        return self._call("DELETE", f"/v1/files/{file_id}")

    def create_fine_tuning_job(
        self,
        model: str,
        training_file: str,
        *,
        validation_file: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Obj:
        body = {
            "model": model,
            "training_file": training_file,
            "validation_file": validation_file,
            "hyperparameters": hyperparameters,
        }
        return self._call(
            "POST",
            "/v1/fine_tuning/jobs",
            json=without_none({**body, "suffix": suffix, "seed": seed, "metadata": metadata}),
        )

    def list_fine_tuning_jobs(self, limit: int = 100, after: str | None = None) -> Objs:
        return self._call_list("GET", "/v1/fine_tuning/jobs", params=without_none({"limit": limit, "after": after}))

    def get_fine_tuning_job(self, job_id: str) -> Obj:
        return self._call("GET", f"/v1/fine_tuning/jobs/{job_id}")

    def cancel_fine_tuning_job(self, job_id: str) -> Obj:
        return self._call("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")

    def fine_tuning_events(self, job_id: str, limit: int = 1000, after: str | None = None) -> Objs:
        params = without_none({"limit": limit, "after": after})
        return self._call_list("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params=params)

    def fine_tuning_checkpoints(self, job_id: str, limit: int = 1000) -> Objs:
        return self._call_list("GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": limit})

    def create_batch(self, input_file_id: str, endpoint: str, *, metadata: dict[str, str] | None = None) -> Obj:
        body = {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": "24h"}
        return self._call("POST", "/v1/batches", json=without_none({**body, "metadata": metadata}))

    def list_batches(self, limit: int = 100, after: str | None = None) -> Objs:
        return self._call_list("GET", "/v1/batches", params=without_none({"limit": limit, "after": after}))

    def get_batch(self, batch_id: str) -> Obj:
        return self._call("GET", f"/v1/batches/{batch_id}")

    def cancel_batch(self, batch_id: str) -> Obj:
        return self._call("POST", f"/v1/batches/{batch_id}/cancel")

    # registry
    def list_models(self) -> Objs:
        return self._call_list("GET", "/v1/models")

    def get_model(self, name: str) -> Obj:
        return self._call("GET", f"/v1/models/{name}")

    def update_model(self, name: str, *, public: bool) -> Obj:
        """Share your own model with every tenant (they write `owner/name`), or stop sharing it."""
        return self._call("PATCH", f"/v1/models/{name}", json={"public": public})

    def set_alias(self, name: str, alias: str, version: int) -> Obj:
        return self._call("PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    def delete_alias(self, name: str, alias: str) -> Obj:
        return self._call("DELETE", f"/v1/models/{name}/aliases/{alias}")

    def delete_version(self, name: str, version: int) -> Obj:
        return self._call("DELETE", f"/v1/models/{name}/versions/{version}")

    def delete_model(self, name: str) -> Obj:
        """Delete the model and every version of it."""
        return self._call("DELETE", f"/v1/models/{name}")

    def import_model(self, path: str | Path, name: str, *, runtime: str | None = None) -> Obj:
        """Register a Hugging Face directory that lies on the server's disk (admin key): an encoder, a causal LM
        or an image classifier (with its preprocessor_config.json); an encoder may be served with
        `runtime="onnx-int8"`."""
        body = without_none({"path": import_path(path), "name": name, "runtime": runtime})
        return self._call("POST", "/v1/models/import", json=body)

    def load_model(
        self,
        ref: str,
        *,
        max_batch_size: int | None = None,
        max_wait_ms: float | None = None,
        max_queue_size: int | None = None,
        replicas: int | None = None,
        autoscaling: dict[str, float] | None = None,
    ) -> Obj:
        """Load a version now (admin key), with batch settings for as long as it stays loaded. On a cluster,
        `replicas` (or `autoscaling`: `min_replicas`, `max_replicas`, `target_ongoing_requests`) sets its Ray Serve
        replicas, re-scaling a served version in place; the embedded server refuses more than one (422)."""
        body = without_none(
            {
                "max_batch_size": max_batch_size,
                "max_wait_ms": max_wait_ms,
                "max_queue_size": max_queue_size,
                "replicas": replicas,
                "autoscaling": autoscaling,
            }
        )
        return self._call("POST", f"/v1/models/{ref}/load", json=body or None)

    def unload_model(self, ref: str) -> Obj:
        return self._call("POST", f"/v1/models/{ref}/unload")

    # inference
    def predict(self, model: str, inputs: Sequence[str], *, top_k: int | None = None) -> Obj:
        """Each text's label and score, and in `scores` the `top_k` best labels' probabilities, best first."""
        body = without_none({"inputs": list(inputs), "top_k": top_k})
        return self._call("POST", f"/v1/models/{model}/predict", json=body)

    def predict_images(self, model: str, images: Sequence[bytes], *, top_k: int | None = None) -> Obj:
        """Classify images (each the bytes of a PNG, JPEG, WebP or GIF file) with an image-classification model;
        `top_k` labels in each prediction's `scores` (the model `efficientnet-lite0` names ImageNet's 1,000)."""
        body = without_none({"inputs": image_inputs(images), "top_k": top_k})
        return self._call("POST", f"/v1/models/{model}/predict", json=body)

    def embed_images(self, model: str, images: Sequence[bytes]) -> Obj:
        """Image embeddings (`efficientnet-lite0` or an image-classifier version): OpenAI's list, one unit-length
        vector per image in `data[i]["embedding"]` (1280 numbers for EfficientNet-Lite0)."""
        return self._call("POST", f"/v1/models/{model}/embed", json={"inputs": image_inputs(images)})

    def embed(self, model: str, inputs: str | Sequence[str], **options: Any) -> Obj:
        """OpenAI's embeddings (`encoding_format`, `dimensions`, `user` as options)."""
        body = {"model": model, "input": inputs if isinstance(inputs, str) else list(inputs), **options}
        return self._call("POST", "/v1/embeddings", json=body)

    def chat(self, model: str, messages: Sequence[Message], **options: Any) -> Obj:
        """A chat completion (`max_tokens`, `temperature`, `top_p`, `stop`, `seed` as options)."""
        return self._call("POST", "/v1/chat/completions", json=chat_body(model, messages, options, stream=False))

    def complete(self, model: str, prompt: str, **options: Any) -> Obj:
        return self._call("POST", "/v1/completions", json=completion_body(model, prompt, options, stream=False))

    # tenancy (admin keys)
    def create_tenant(self, name: str, limits: dict[str, int] | None = None) -> Obj:
        return self._call("POST", "/v1/tenants", json={"name": name, "limits": limits or {}})

    def list_tenants(self) -> Objs:
        return self._call_list("GET", "/v1/tenants")

    def get_tenant(self, tenant_id: str) -> Obj:
        return self._call("GET", f"/v1/tenants/{tenant_id}")

    def update_tenant(
        self, tenant_id: str, *, limits: dict[str, int] | None = None, disabled: bool | None = None
    ) -> Obj:
        return self._call(
            "PATCH", f"/v1/tenants/{tenant_id}", json=without_none({"limits": limits, "disabled": disabled})
        )

    def create_key(
        self,
        tenant_id: str,
        scopes: Sequence[str],
        *,
        expires_at: float | None = None,
        limits: dict[str, int] | None = None,
    ) -> Obj:
        """A key of the tenant; its secret (`key`) is in this answer only."""
        body = {"scopes": list(scopes), "expires_at": expires_at, "limits": limits or {}}
        return self._call("POST", f"/v1/tenants/{tenant_id}/keys", json=body)

    def list_keys(self, tenant_id: str) -> Objs:
        return self._call_list("GET", f"/v1/tenants/{tenant_id}/keys")

    def revoke_key(self, key_id: str) -> Obj:
        return self._call("DELETE", f"/v1/keys/{key_id}")

    def usage(
        self,
        *,
        group_by: str | None = None,
        start: float | None = None,
        end: float | None = None,
        all_tenants: bool = False,
    ) -> Objs:
        """Usage between `start` and `end` (unix seconds), grouped by `model`, `key`, `day` or `tenant`."""
        params = {"group_by": group_by, "start": start, "end": end, "tenant": "all" if all_tenants else None}
        return self._call_list("GET", "/v1/usage", params=without_none(params))

    def audit_log(self, limit: int = 1000) -> Objs:
        return self._call_list("GET", "/v1/audit", params={"limit": limit})
