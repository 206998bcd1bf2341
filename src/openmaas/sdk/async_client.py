"""The asynchronous client over httpx.AsyncClient: the same methods as `Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

from openmaas.sdk.client import GENERATION_READ_TIMEOUT, JSONObject, client_settings
from openmaas.sdk.errors import connection_error, status_error
from openmaas.sdk.routes import Message, Routes, chat_body, completion_body
from openmaas.sdk.streaming import FINAL_JOB_EVENTS, TERMINAL, generation_chunk, job_event


class AsyncClient(Routes[Awaitable[JSONObject], Awaitable[list[JSONObject]]]):
    """`AsyncClient(base_url, api_key)`: every method of `Client`, as a coroutine or an async iterator."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, headers = client_settings(base_url, api_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise status_error(response)
                yield response
        except httpx.TransportError as error:
            raise connection_error(error, self.base_url) from error

    async def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        async with self._stream(method, path, json=json, params=params) as response:
            await response.aread()
        return response.json()

    async def _call_list(self, method: str, path: str, *, params: dict[str, Any] | None = None) -> list[JSONObject]:
        data: list[JSONObject] = (await self._call(method, path, params=params))["data"]
        return data

    async def health(self) -> bool:
        try:
            return (await self._http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    async def readiness(self) -> JSONObject:
        """`GET /readyz`, as `Client.readiness`."""
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError as error:
            raise connection_error(error, self.base_url) from error
        if response.status_code not in (200, 503):
            raise status_error(response)
        ready: JSONObject = response.json()
        return ready

    # datasets
    async def upload_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        kind: str = "classification",
    ) -> JSONObject:
        path = Path(path)
        form = {"text_column": text_column, "label_column": label_column, "name": name or path.stem, "kind": kind}
        content = await asyncio.to_thread(path.read_bytes)
        async with self._stream("POST", "/v1/datasets", data=form, files={"file": (path.name, content)}) as response:
            await response.aread()
        created: JSONObject = response.json()
        return created

    async def list_datasets(self) -> list[JSONObject]:
        items: list[JSONObject] = []
        after: str | None = None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            page = await self._call("GET", "/v1/datasets", params=params)
            items.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return items
            after = page["data"][-1]["id"]

    # training jobs
    async def stream_job_events(self, job_id: str, after: int = 0) -> AsyncIterator[JSONObject]:
        last = after
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            params: dict[str, str | int] = {"stream": "true", "after": last}
            timeout = httpx.Timeout(self._http.timeout.connect, read=60.0)
            async with self._stream(
                "GET", f"/v1/jobs/{job_id}/events", params=params, headers=headers, timeout=timeout
            ) as response:
                async for sse in EventSource(response).aiter_sse():
                    if (event := job_event(sse)) is None:
                        continue
                    last = event["id"]
                    yield event
                    if event["type"] in FINAL_JOB_EVENTS:
                        return
            if (await self.get_job(job_id))["status"] in TERMINAL:
                return

    async def follow_job(
        self, job_id: str, *, poll: float = 0.5, timeout: float | None = None
    ) -> AsyncIterator[JSONObject]:
        after, deadline = 0, None if timeout is None else time.monotonic() + timeout
        while True:
            done = (await self.get_job(job_id))["status"] in TERMINAL
            for event in await self.job_events(job_id, after=after):
                after = event["id"]
                yield event
            if done:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout}s")
            await asyncio.sleep(poll)

    async def wait_for_job(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.25) -> JSONObject:
        async for _ in self.follow_job(job_id, poll=poll, timeout=timeout):
            pass
        return await self.get_job(job_id)

    # registry
    async def download_artifact(self, model: str, destination: str | Path, *, format: str = "safetensors") -> Path:
        destination = Path(destination)
        async with self._stream("GET", f"/v1/models/{model}/artifact", params={"format": format}) as response:
            with destination.open("wb") as handle:
                async for chunk in response.aiter_bytes():
                    handle.write(chunk)
        return destination

    # generation streams
    async def _generation(self, path: str, body: JSONObject) -> AsyncIterator[JSONObject]:
        timeout = httpx.Timeout(self._http.timeout.connect, read=GENERATION_READ_TIMEOUT)
        async with self._stream("POST", path, json=body, timeout=timeout) as response:
            async for sse in EventSource(response).aiter_sse():
                if (chunk := generation_chunk(sse)) is None:
                    return
                yield chunk

    def chat_stream(self, model: str, messages: Sequence[Message], **options: Any) -> AsyncIterator[JSONObject]:
        return self._generation("/v1/chat/completions", chat_body(model, messages, options, stream=True))

    def complete_stream(self, model: str, prompt: str, **options: Any) -> AsyncIterator[JSONObject]:
        return self._generation("/v1/completions", completion_body(model, prompt, options, stream=True))
