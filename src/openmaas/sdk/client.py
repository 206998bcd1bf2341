"""The synchronous client over httpx: every route of the server (see `routes.py`), streams, uploads and paging."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

from openmaas.sdk.errors import connection_error, status_error
from openmaas.sdk.routes import Message, Routes, chat_body, completion_body
from openmaas.sdk.streaming import FINAL_JOB_EVENTS, TERMINAL, generation_chunk, job_event

DEFAULT_URL = "http://127.0.0.1:8000"
# A model may need loading before its first token; the server sends keep-alive comments on a quiet stream.
GENERATION_READ_TIMEOUT = 120.0
JSONObject = dict[str, Any]


def client_settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The server's address and the auth header, from the arguments or OPENMAAS_URL and OPENMAAS_API_KEY."""
    base_url = (base_url or os.environ.get("OPENMAAS_URL") or DEFAULT_URL).rstrip("/")
    api_key = api_key or os.environ.get("OPENMAAS_API_KEY")
    return base_url, {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client(Routes[JSONObject, list[JSONObject]]):
    """`Client(base_url, api_key)`; both default to $OPENMAAS_URL and $OPENMAAS_API_KEY. Errors are the
    exceptions of `openmaas.sdk.errors` (a status error, or `APIConnectionError` when nothing answers)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, headers = client_settings(base_url, api_key)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer whose status was checked; transport failures become `APIConnectionError`."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise status_error(response)
                yield response
        except httpx.TransportError as error:
            raise connection_error(error, self.base_url) from error

    def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        with self._stream(method, path, json=json, params=params) as response:
            response.read()
        return response.json()

    def _call_list(self, method: str, path: str, *, params: dict[str, Any] | None = None) -> list[JSONObject]:
        data: list[JSONObject] = self._call(method, path, params=params)["data"]
        return data

    def health(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def readiness(self) -> JSONObject:
        """`GET /readyz`: `{"status": "ready"}` once the preloaded models are in, else `"loading"` and what is
        still loading (its 503 is an answer here, not an error)."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError as error:
            raise connection_error(error, self.base_url) from error
        if response.status_code not in (200, 503):
            raise status_error(response)
        ready: JSONObject = response.json()
        return ready

    # datasets
    def upload_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        kind: str = "classification",
    ) -> JSONObject:
        """Upload labelled texts (`kind="classification"`) or documents for language models (`kind="text"`)."""
        path = Path(path)
        form = {"text_column": text_column, "label_column": label_column, "name": name or path.stem, "kind": kind}
        with (
            path.open("rb") as handle,
            self._stream("POST", "/v1/datasets", data=form, files={"file": (path.name, handle)}) as response,
        ):
            response.read()
        created: JSONObject = response.json()
        return created

    def list_datasets(self) -> list[JSONObject]:
        """Every dataset of the caller's tenant, page after page."""
        items: list[JSONObject] = []
        after: str | None = None
        while True:
            page = self._call("GET", "/v1/datasets", params={"limit": 100, **({"after": after} if after else {})})
            items.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return items
            after = page["data"][-1]["id"]

    # training jobs
    def stream_job_events(self, job_id: str, after: int = 0) -> Iterator[JSONObject]:
        """Yield the job's events as Server-Sent Events arrive, until it ends (reconnects from the last id)."""
        last = after
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            params: dict[str, str | int] = {"stream": "true", "after": last}
            timeout = httpx.Timeout(self._http.timeout.connect, read=60.0)
            with self._stream(
                "GET", f"/v1/jobs/{job_id}/events", params=params, headers=headers, timeout=timeout
            ) as response:
                for sse in EventSource(response).iter_sse():
                    if (event := job_event(sse)) is None:
                        continue
                    last = event["id"]
                    yield event
                    if event["type"] in FINAL_JOB_EVENTS:
                        return
            if self.get_job(job_id)["status"] in TERMINAL:
                return

    def follow_job(self, job_id: str, *, poll: float = 0.5, timeout: float | None = None) -> Iterator[JSONObject]:
        """Yield the job's events by polling, until it reaches a final state."""
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

    def wait_for_job(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.25) -> JSONObject:
        for _ in self.follow_job(job_id, poll=poll, timeout=timeout):
            pass
        return self.get_job(job_id)

    # registry
    def download_artifact(self, model: str, destination: str | Path, *, format: str = "safetensors") -> Path:
        destination = Path(destination)
        params = {"format": format}
        with (
            self._stream("GET", f"/v1/models/{model}/artifact", params=params) as response,
            destination.open("wb") as out,
        ):
            for chunk in response.iter_bytes():
                out.write(chunk)
        return destination

    # generation streams
    def _generation(self, path: str, body: JSONObject) -> Iterator[JSONObject]:
        timeout = httpx.Timeout(self._http.timeout.connect, read=GENERATION_READ_TIMEOUT)
        with self._stream("POST", path, json=body, timeout=timeout) as response:
            for sse in EventSource(response).iter_sse():
                if (chunk := generation_chunk(sse)) is None:
                    return
                yield chunk

    def chat_stream(self, model: str, messages: Sequence[Message], **options: Any) -> Iterator[JSONObject]:
        """The chat completion's chunks as the tokens come (`openmaas.delta_text(chunk)` is a chunk's text)."""
        return self._generation("/v1/chat/completions", chat_body(model, messages, options, stream=True))

    def complete_stream(self, model: str, prompt: str, **options: Any) -> Iterator[JSONObject]:
        return self._generation("/v1/completions", completion_body(model, prompt, options, stream=True))
