"""The SDK against a real server: every route reachable, openai-shaped errors, streams, and the async client."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    OpenMaaSError,
    delta_text,
)
from tests.conftest import ADMIN_KEY, Server, free_port
from tests.tiny_llm import build_tiny_causal_lm, with_unshared_files

HELLO = [{"role": "user", "content": "Hello there"}]
# Routes no SDK method is for: Prometheus scrapes /metrics itself.
NOT_FOR_THE_SDK = {("GET", "/metrics")}
# KServe v2 has its own clients (tritonclient, KServe's SDK): tests/api/test_kserve_v2*.py use them.
NOT_FOR_THE_SDK_PREFIXES = ("/v2",)


@pytest.fixture(scope="module")
def tiny_llm(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("sdk-llm") / "model")
    with server.client() as client:
        assert client.import_model(directory, "sdk-llm")["task"] == "text-generation"
    return "sdk-llm"


class Recorder(httpx.HTTPTransport):
    """A real transport that notes each request's method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        return super().handle_request(request)


def every_call(client: Client, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """One call of every method, most of them on things that do not exist (a 404 still took the route)."""
    csv = tmp_path / "tiny.csv"
    csv.write_text("text,label\ngood day,a\nbad day,b\nfine day,a\nawful day,b\n", encoding="utf-8")
    yield client.health
    yield lambda: client.delete_dataset(client.upload_dataset(csv)["id"])
    yield client.list_datasets
    yield lambda: client.get_dataset("ds_missing")
    yield lambda: client.create_job("ds_missing", "m")
    yield client.list_jobs
    yield lambda: client.get_job("job_missing")
    yield lambda: client.cancel_job("job_missing")
    yield lambda: client.job_events("job_missing")
    yield lambda: list(client.stream_job_events("job_missing"))
    yield lambda: client.job_checkpoints("job_missing")
    yield client.list_models
    yield lambda: client.get_model("missing")
    yield lambda: client.update_model("missing", public=True)
    yield lambda: client.set_alias("missing", "production", 1)
    yield lambda: client.delete_alias("missing", "production")
    yield lambda: client.delete_version("missing", 1)
    yield lambda: client.delete_model("missing")
    yield lambda: client.import_model(tmp_path / "not-a-model", "missing")
    yield lambda: client.download_artifact("missing", tmp_path / "artifact")
    yield lambda: client.load_model("missing")
    yield lambda: client.unload_model("missing")
    yield lambda: client.predict("missing", ["text"])
    yield lambda: client.embed_images("missing", [b"not an image"])
    yield lambda: client.embed("all-minilm-l6-v2", "text")
    yield lambda: client.chat("missing", HELLO)
    yield lambda: list(client.chat_stream("missing", HELLO))
    yield lambda: client.complete("missing", "text")
    yield lambda: list(client.complete_stream("missing", "text"))
    yield lambda: client.create_tenant(f"sdk-{time.monotonic_ns()}")
    yield client.list_tenants
    yield lambda: client.get_tenant("tn_missing")
    yield lambda: client.update_tenant("tn_missing", disabled=True)
    yield lambda: client.create_key("tn_missing", ["read"])
    yield lambda: client.list_keys("tn_missing")
    yield lambda: client.revoke_key("key_missing")
    yield client.usage
    yield client.audit_log
    yield client.me
    yield client.cluster
    yield lambda: client.dataset_samples("ds_missing")
    yield client.list_recipes
    yield lambda: client.dataset_rows("ds_missing")
    yield client.readiness
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n', encoding="utf-8")
    yield lambda: client.delete_file(client.upload_file(requests, "batch")["id"])
    yield lambda: client.list_files(purpose="batch")
    yield lambda: client.get_file("file_missing")
    yield lambda: client.file_content("file_missing")
    yield lambda: client.create_fine_tuning_job("bow-mlp", "file_missing")
    yield client.list_fine_tuning_jobs
    yield lambda: client.get_fine_tuning_job("job_missing")
    yield lambda: client.cancel_fine_tuning_job("job_missing")
    yield lambda: client.fine_tuning_events("job_missing")
    yield lambda: client.fine_tuning_checkpoints("job_missing")
    yield lambda: client.create_batch("file_missing", "/v1/embeddings")
    yield client.list_batches
    yield lambda: client.get_batch("batch_missing")
    yield lambda: client.cancel_batch("batch_missing")


def test_the_sdk_reaches_every_route_of_the_server(server: Server, http: httpx.Client, tmp_path: Path) -> None:
    recorder = Recorder()
    with Client(server.url, ADMIN_KEY, transport=recorder) as client:
        for call in every_call(client, tmp_path):
            try:
                call()
            except NotFoundError:
                pass
            except OpenMaaSError as error:
                assert getattr(error, "status_code", 0) in (404, 422), error
    routes = {
        (method.upper(), path)
        for path, operations in http.get("/openapi.json").json()["paths"].items()
        for method in operations
    }
    missed = []
    for method, template in sorted(routes - NOT_FOR_THE_SDK):
        if template.startswith(NOT_FOR_THE_SDK_PREFIXES):
            continue
        pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)))
        if not any(m == method and pattern.fullmatch(path) for m, path in recorder.seen):
            missed.append(f"{method} {template}")
    assert not missed, f"no SDK method for {missed}"


def test_files_and_batches_round_trip_through_both_clients(server: Server, client: Client, tmp_path: Path) -> None:
    requests = tmp_path / "embed.jsonl"
    line = {
        "custom_id": "only",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "all-minilm-l6-v2", "input": "hi"},
    }
    requests.write_text(json.dumps(line) + "\n", encoding="utf-8")
    uploaded = client.upload_file(requests, "batch")
    assert client.file_content(uploaded["id"]) == requests.read_bytes()
    assert uploaded["id"] in [f["id"] for f in client.list_files(purpose="batch")]
    batch = client.create_batch(uploaded["id"], "/v1/embeddings")
    assert batch["id"] in [b["id"] for b in client.list_batches()]
    deadline = time.monotonic() + 60
    while (batch := client.get_batch(batch["id"]))["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    (output,) = client.file_content(batch["output_file_id"]).splitlines()
    assert json.loads(output)["custom_id"] == "only"

    async def from_async() -> bytes:
        async with AsyncClient(server.url, ADMIN_KEY) as async_client:
            again = await async_client.upload_file(requests, "batch")
            return await async_client.file_content(again["id"])

    assert asyncio.run(from_async()) == requests.read_bytes()


def test_errors_carry_status_code_code_param_and_request_id(server: Server, client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_model("no-such-model")
    error = caught.value
    assert error.status_code == 404 and error.code == "model_not_found" and error.param == "model"
    assert "no-such-model" in error.message and error.request_id
    with Client(server.url, "om-wrong-key") as stranger, pytest.raises(AuthenticationError) as refused:
        stranger.list_models()
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    with Client(f"http://127.0.0.1:{free_port()}", ADMIN_KEY) as nowhere, pytest.raises(APIConnectionError) as down:
        nowhere.list_models()
    assert "cannot reach the OpenMaaS server" in str(down.value)


def test_chat_and_completions_stream_the_text_they_answer_with(client: Client, tiny_llm: str) -> None:
    options = {"max_tokens": 6, "temperature": 0}
    whole = client.chat(tiny_llm, HELLO, **options)["choices"][0]["message"]["content"]
    chunks = list(client.chat_stream(tiny_llm, HELLO, **options))
    assert len(chunks) > 2 and chunks[0]["object"] == "chat.completion.chunk"
    assert "".join(delta_text(c) for c in chunks) == whole
    text = client.complete(tiny_llm, "Users upload", **options)["choices"][0]["text"]
    assert "".join(delta_text(c) for c in client.complete_stream(tiny_llm, "Users upload", **options)) == text
    with pytest.raises(BadRequestError) as caught:
        list(client.chat_stream(tiny_llm, HELLO, temperature=5))
    assert caught.value.param == "temperature"


def test_the_async_client_answers_streams_and_raises_the_same(server: Server, tiny_llm: str) -> None:
    async def run() -> tuple[str, str, list[str], int]:
        async with AsyncClient(server.url, ADMIN_KEY) as client:
            whole = await client.chat(tiny_llm, HELLO, max_tokens=5, temperature=0)
            streamed = [delta_text(c) async for c in client.chat_stream(tiny_llm, HELLO, max_tokens=5, temperature=0)]
            models = [m["id"] for m in await client.list_models()]
            try:
                await client.get_job("job_missing")
            except NotFoundError as error:
                status = error.status_code
            return whole["choices"][0]["message"]["content"], "".join(streamed), models, status

    whole, streamed, models, status = asyncio.run(run())
    assert whole == streamed and tiny_llm in models and status == 404


def test_aliases_loading_deletion_audit_and_usage_windows(
    server: Server, client: Client, tmp_path: Path, tiny_llm: str
) -> None:
    directory = with_unshared_files(build_tiny_causal_lm(tmp_path / "doomed", seed=3))  # see test_cli_commands
    assert client.import_model(directory, "sdk-doomed")["version"] == 1
    assert client.set_alias("sdk-doomed", "production", 1)["aliases"] == {"production": 1}
    assert client.delete_alias("sdk-doomed", "production")["aliases"] == {}
    loaded = client.load_model("sdk-doomed", max_batch_size=4)
    assert loaded["model"] == "sdk-doomed" and loaded["max_batch_size"] == 4 and loaded["memory_bytes"] > 0
    assert client.unload_model("sdk-doomed")["id"] == "sdk-doomed:1"
    assert client.delete_model("sdk-doomed")["deleted"] is True
    with pytest.raises(NotFoundError):
        client.get_model("sdk-doomed")
    actions = {(e["action"], e["target"]) for e in client.audit_log()}
    assert any(target.startswith("sdk-doomed") for _, target in actions), actions

    began = time.time()
    client.chat(tiny_llm, HELLO, max_tokens=2)
    deadline = time.monotonic() + 10  # usage moves from the journal to the database every 0.2 s
    while time.monotonic() < deadline:
        now = client.usage(group_by="model", start=began - 1, end=time.time() + 1)
        if any(row.get("model") == tiny_llm for row in now):
            break
        time.sleep(0.2)
    assert any(row.get("model") == tiny_llm for row in now), now
    assert client.usage(group_by="model", start=time.time() + 3600) == []
