"""/v1/batches through the official `openai` client: embeddings and chat batches with their output and error files
in OpenAI's shape, line-numbered validation errors, list paging, cancel; every answer checked with `openai.types`."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from openai.types import Batch, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from tests.conftest import ADMIN_KEY, Server
from tests.tiny_llm import build_tiny_causal_lm

EMBEDDER = "all-minilm-l6-v2"


def requests_file(oai: openai.OpenAI, url: str, bodies: list[dict], prefix: str = "r") -> str:
    lines = [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": url, "body": b} for i, b in enumerate(bodies)]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return oai.files.create(file=(f"{prefix}.jsonl", data), purpose="batch").id


def strict(batch: Batch) -> Batch:
    return Batch.model_validate(batch.model_dump(mode="json", exclude_unset=True), strict=True)


def wait(oai: openai.OpenAI, batch_id: str, timeout: float = 120) -> Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = strict(oai.batches.retrieve(batch_id))
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not finish")


def lines_of(oai: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in oai.files.content(file_id).text.splitlines()]


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


def batch_records(http: httpx.Client) -> int:
    rows = http.get("/v1/usage", params={"group_by": "protocol"}).json()["data"]
    return sum(row["records"] for row in rows if row.get("protocol") == "batch" and row["kind"] == "inference")


def test_an_embeddings_batch_writes_output_and_error_files(oai: openai.OpenAI, http: httpx.Client) -> None:
    before = batch_records(http)
    bodies = [{"model": EMBEDDER, "input": f"text number {i}"} for i in range(5)] + [{"model": EMBEDDER, "input": ""}]
    file_id = requests_file(oai, "/v1/embeddings", bodies, "emb")
    created = strict(
        oai.batches.create(
            input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", metadata={"run": "1"}
        )
    )
    assert created.status == "in_progress" and created.request_counts and created.request_counts.total == 6
    batch = wait(oai, created.id)
    assert batch.status == "completed" and batch.metadata == {"run": "1"}
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (5, 1)
    assert batch.completed_at and batch.in_progress_at and batch.finalizing_at
    output, errors = lines_of(oai, batch.output_file_id), lines_of(oai, batch.error_file_id)
    assert sorted(line["custom_id"] for line in output) == [f"emb-{i}" for i in range(5)]
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        answer = CreateEmbeddingResponse.model_validate(line["response"]["body"], strict=True)
        assert len(answer.data[0].embedding) == 384
    (error,) = errors
    assert error["custom_id"] == "emb-5" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"]
    assert oai.files.retrieve(batch.output_file_id or "").purpose == "batch_output"
    deadline = time.monotonic() + 20  # usage is recorded by a background drain
    while batch_records(http) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert batch_records(http) == before + 5  # each answered request once, marked as batch


def test_a_chat_batch_answers_as_chat_completions_does(
    oai: openai.OpenAI, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-batch") / "model")
    with server.http() as http:
        assert http.post("/v1/models/import", json={"path": str(directory), "name": "tiny-batch"}).status_code == 201
    hello = [{"role": "user", "content": "Say something."}]
    file_id = requests_file(
        oai, "/v1/chat/completions", [{"model": "tiny-batch", "messages": hello, "max_tokens": 4}] * 3, "chat"
    )
    batch = wait(
        oai, oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id
    )
    assert batch.status == "completed" and batch.error_file_id is None
    output = lines_of(oai, batch.output_file_id)
    assert sorted(line["custom_id"] for line in output) == ["chat-0", "chat-1", "chat-2"]
    for line in output:
        ChatCompletion.model_validate(line["response"]["body"], strict=True)


def test_bad_lines_fail_the_batch_with_their_line_numbers(oai: openai.OpenAI) -> None:
    good = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBEDDER, "input": "x"}}
    other = {**good, "custom_id": "c", "url": "/v1/completions"}
    data = json.dumps(good).encode() + b"\n{not json\n" + json.dumps(other).encode() + b"\n" + json.dumps(good).encode()
    file_id = oai.files.create(file=("bad.jsonl", data), purpose="batch").id
    batch = strict(oai.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"))
    assert batch.status == "failed" and batch.errors is not None and batch.failed_at
    assert [(e.line, e.code) for e in batch.errors.data or []] == [
        (2, "invalid_json_line"),
        (3, "mismatched_url"),
        (4, "duplicate_custom_id"),
    ]
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(input_file_id=file_id, endpoint="/v1/images", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(input_file_id="file_nope", endpoint="/v1/embeddings", completion_window="24h")


def test_a_cancelled_batch_stops_and_lists_page(oai: openai.OpenAI, http: httpx.Client) -> None:
    bodies = [{"model": EMBEDDER, "input": f"a longer text to embed, number {i}"} for i in range(3000)]
    first = oai.batches.create(
        input_file_id=requests_file(oai, "/v1/embeddings", bodies, "big"),
        endpoint="/v1/embeddings",
        completion_window="24h",
    )
    cancelling = strict(oai.batches.cancel(first.id))
    assert cancelling.status in ("cancelling", "cancelled")
    batch = wait(oai, first.id)
    assert batch.status == "cancelled" and batch.cancelled_at and batch.request_counts is not None
    assert batch.request_counts.completed < 3000
    assert len(lines_of(oai, batch.output_file_id)) == batch.request_counts.completed
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(first.id)
    second = oai.batches.create(
        input_file_id=requests_file(oai, "/v1/embeddings", bodies[:1], "one"),
        endpoint="/v1/embeddings",
        completion_window="24h",
    )
    page = http.get("/v1/batches", params={"limit": 1}).json()
    assert [b["id"] for b in page["data"]] == [second.id] and page["has_more"] is True
    after = http.get("/v1/batches", params={"limit": 1, "after": second.id}).json()
    assert [b["id"] for b in after["data"]] == [first.id]
    assert first.id in [b.id for b in oai.batches.list(limit=2)]  # auto-pagination ends
