"""A synchronous client for the OpenMaaS HTTP API, with the same verbs as the CLI."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from openmaas.lines import iter_lines

TERMINAL = {"succeeded", "failed", "cancelled"}
FINAL_EVENTS = TERMINAL


class APIError(Exception):
    """An error answer from the server, carrying its OpenAI-style fields."""

    def __init__(self, status: int, message: str, type_: str | None, param: str | None, code: str | None) -> None:
        super().__init__(f"{status} {type_ or 'error'}: {message}")
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code


class Client:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("OPENMAAS_URL", "http://127.0.0.1:8000")
        api_key = api_key or os.environ.get("OPENMAAS_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"message": response.text or response.reason_phrase}
        raise APIError(
            response.status_code, error.get("message", ""), error.get("type"), error.get("param"), error.get("code")
        )

    def health(self) -> bool:
        return self._http.get("/healthz").status_code == 200

    # datasets
    def upload_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        kind: str = "classification",
    ) -> dict[str, Any]:
        """Upload labelled texts (`kind="classification"`) or documents for language models (`kind="text"`)."""
        path = Path(path)
        form = {"text_column": text_column, "label_column": label_column, "name": name or path.stem, "kind": kind}
        with path.open("rb") as handle:
            return self._request("POST", "/v1/datasets", data=form, files={"file": (path.name, handle)})

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self._paged("/v1/datasets"))

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # training jobs
    def create_job(
        self, dataset: str, model: str, *, recipe: str = "bow-mlp", hyperparameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"dataset": dataset, "model": model, "recipe": recipe, "hyperparameters": hyperparameters or {}}
        return self._request("POST", "/v1/jobs", json=body)

    def list_jobs(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self._request("GET", "/v1/jobs", params=params)["data"]

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def job_events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/jobs/{job_id}/events", params={"after": after})["data"]

    def follow_job(self, job_id: str, *, poll: float = 0.5, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the job's events as they arrive, until it reaches a final state."""
        after, deadline = 0, None if timeout is None else time.monotonic() + timeout
        while True:
            done = self.get_job(job_id)["status"] in TERMINAL
            for event in self.job_events(job_id, after=after):
                after = event["id"]
                yield event
            if done:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout}s")
            time.sleep(poll)

    def stream_job_events(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """Yield the job's events as Server-Sent Events arrive, until it ends (reconnects from the last id)."""
        last = after
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            params: dict[str, str | int] = {"stream": "true", "after": last}
            timeout = httpx.Timeout(self._http.timeout.connect, read=60.0)
            with self._http.stream(
                "GET", f"/v1/jobs/{job_id}/events", params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise(response)
                data: list[str] = []
                for line in iter_lines(response.iter_text()):  # SSE lines end at CR/LF only
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        event = json.loads("\n".join(data))
                        data = []
                        last = event["id"]
                        yield event
                        if event["type"] in FINAL_EVENTS:
                            return
            if self.get_job(job_id)["status"] in TERMINAL:
                return

    def wait_for_job(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.25) -> dict[str, Any]:
        for _ in self.follow_job(job_id, poll=poll, timeout=timeout):
            pass
        return self.get_job(job_id)

    # registry
    def list_models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/models")["data"]

    def get_model(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/models/{name}")

    def update_model(self, name: str, *, public: bool) -> dict[str, Any]:
        """Share your own model with every tenant (they write `owner/name`), or stop sharing it."""
        return self._request("PATCH", f"/v1/models/{name}", json={"public": public})

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return self._request("PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    def delete_version(self, name: str, version: int) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/models/{name}/versions/{version}")

    def import_model(self, path: str | Path, name: str, *, runtime: str | None = None) -> dict[str, Any]:
        """Register a Hugging Face directory that lies on the server's disk (admin key); an encoder may be
        served with `runtime="onnx-int8"`."""
        # Sent as written: the server reads it, so a relative path or a Hub id is its to refuse with the reason.
        body: dict[str, Any] = {"path": str(path), "name": name}
        if runtime is not None:
            body["runtime"] = runtime
        return self._request("POST", "/v1/models/import", json=body)

    def download_artifact(self, model: str, destination: str | Path, *, format: str = "safetensors") -> Path:
        destination = Path(destination)
        with self._http.stream("GET", f"/v1/models/{model}/artifact", params={"format": format}) as response:
            if response.status_code >= 400:
                response.read()
                self._raise(response)
            with destination.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return destination

    def embed(self, model: str, inputs: str | Sequence[str], **options: Any) -> dict[str, Any]:
        body = {"model": model, "input": inputs if isinstance(inputs, str) else list(inputs), **options}
        return self._request("POST", "/v1/embeddings", json=body)

    # tenancy (admin keys)
    def create_tenant(self, name: str, limits: dict[str, int] | None = None) -> dict[str, Any]:
        return self._request("POST", "/v1/tenants", json={"name": name, "limits": limits or {}})

    def list_tenants(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/tenants")["data"]

    def update_tenant(
        self, tenant_id: str, *, limits: dict[str, int] | None = None, disabled: bool | None = None
    ) -> dict[str, Any]:
        body = {k: v for k, v in {"limits": limits, "disabled": disabled}.items() if v is not None}
        return self._request("PATCH", f"/v1/tenants/{tenant_id}", json=body)

    def create_key(
        self,
        tenant_id: str,
        scopes: Sequence[str],
        *,
        expires_at: float | None = None,
        limits: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        body = {"scopes": list(scopes), "expires_at": expires_at, "limits": limits or {}}
        return self._request("POST", f"/v1/tenants/{tenant_id}/keys", json=body)

    def list_keys(self, tenant_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/tenants/{tenant_id}/keys")["data"]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/keys/{key_id}")

    def usage(
        self,
        *,
        group_by: str | None = None,
        start: float | None = None,
        end: float | None = None,
        all_tenants: bool = False,
    ) -> list[dict[str, Any]]:
        params = {"group_by": group_by, "start": start, "end": end, "tenant": "all" if all_tenants else None}
        return self._request("GET", "/v1/usage", params={k: v for k, v in params.items() if v is not None})["data"]

    def audit_log(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/audit")["data"]

    def job_checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/jobs/{job_id}/checkpoints")["data"]

    # inference
    def predict(self, model: str, inputs: Sequence[str]) -> dict[str, Any]:
        return self._request("POST", f"/v1/models/{model}/predict", json={"inputs": list(inputs)})

    def _paged(self, path: str) -> Iterator[dict[str, Any]]:
        after: str | None = None
        while True:
            page = self._request("GET", path, params={"limit": 100, **({"after": after} if after else {})})
            yield from page["data"]
            if not page.get("has_more") or not page["data"]:
                return
            after = page["data"][-1]["id"]
