"""What bounds a batch, through the official `openai` client: its completion window (a batch not done in time ends
`expired`), its lease (two servers over one database answer each request once between them), and its tenant's
storage (the output file counts against `storage_bytes`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import Batch

from tests.api.test_tenancy import Tenant
from tests.conftest import ADMIN_KEY, Server
from tests.contract.test_metadata_store import _postgres_url

EMBEDDER = "all-minilm-l6-v2"


def upload(oai: openai.OpenAI, n: int, prefix: str) -> str:
    lines = [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBEDDER, "input": f"t {i}"},
        }
        for i in range(n)
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return oai.files.create(file=(f"{prefix}.jsonl", data), purpose="batch").id


def wait(oai: openai.OpenAI, batch_id: str, timeout: float = 120) -> Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = Batch.model_validate(
            oai.batches.retrieve(batch_id).model_dump(mode="json", exclude_unset=True), strict=True
        )
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not finish")


def lines_of(oai: openai.OpenAI, file_id: str | None) -> list[dict]:
    return [json.loads(line) for line in oai.files.content(file_id).text.splitlines()] if file_id else []


def test_a_batch_past_its_completion_window_expires_with_its_requests_in_the_error_file(
    start_server: type[Server],
) -> None:
    server = start_server(OPENMAAS_BATCH_COMPLETION_WINDOW_S="0.001")  # "24h" lasts a millisecond here
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    created = oai.batches.create(
        input_file_id=upload(oai, 3, "late"), endpoint="/v1/embeddings", completion_window="24h"
    )
    assert created.expires_at is not None and created.expires_at <= created.created_at + 1
    batch = wait(oai, created.id)
    assert batch.status == "expired" and batch.expired_at is not None and batch.output_file_id is None
    errors = lines_of(oai, batch.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == ["late-0", "late-1", "late-2"]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(batch.id)


@pytest.fixture
def database() -> Iterator[str]:
    urls = _postgres_url()
    yield next(urls)
    next(urls, None)


def test_two_servers_over_one_database_answer_each_request_once(
    start_server: type[Server], tmp_path: Path, database: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    settings = {"OPENMAAS_DATABASE_URL": database, "OPENMAAS_BATCH_LEASE_S": "5"}
    a = start_server(shared, OPENMAAS_NODE_NAME="node-a", **settings)
    b = start_server(shared, OPENMAAS_NODE_NAME="node-b", **settings)
    through_a = openai.OpenAI(base_url=f"{a.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    through_b = openai.OpenAI(base_url=f"{b.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    # Both servers' runners see both batches at once: each batch is answered by whichever holds its lease.
    ids = [
        through_a.batches.create(
            input_file_id=upload(through_a, 30, "a"), endpoint="/v1/embeddings", completion_window="24h"
        ).id,
        through_b.batches.create(
            input_file_id=upload(through_b, 30, "b"), endpoint="/v1/embeddings", completion_window="24h"
        ).id,
    ]
    for batch_id, prefix in zip(ids, "ab", strict=True):
        batch = wait(through_b, batch_id)
        assert batch.status == "completed" and batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (30, 0)
        output = lines_of(through_a, batch.output_file_id)
        assert sorted(line["custom_id"] for line in output) == sorted(f"{prefix}-{i}" for i in range(30))
    # Every request was run once: one usage record each, whichever server ran it.
    with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = http.get("/v1/usage", params={"group_by": "protocol"}).json()["data"]
            records = sum(r["records"] for r in rows if r.get("protocol") == "batch" and r["kind"] == "inference")
            if records >= 60:
                break
            time.sleep(0.5)
        time.sleep(1)  # a double run would still be recording
        rows = http.get("/v1/usage", params={"group_by": "protocol"}).json()["data"]
        assert sum(r["records"] for r in rows if r.get("protocol") == "batch" and r["kind"] == "inference") == 60


def test_batch_output_counts_against_the_tenants_storage(server: Server, http: httpx.Client) -> None:
    tenant = Tenant(server, http, "batch-storage", storage_bytes=4000)
    with tenant.http(tenant.key(["read", "infer"])) as client:
        oai = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key=client.headers["Authorization"].split()[1], max_retries=0
        )
        batch = wait(
            oai,
            oai.batches.create(
                input_file_id=upload(oai, 2, "s"), endpoint="/v1/embeddings", completion_window="24h"
            ).id,
        )
        assert batch.status == "completed" and batch.output_file_id is not None
        assert oai.files.retrieve(batch.output_file_id).bytes > 4000  # written: the answers were paid for
        # ... and counted: the tenant is now over its quota, so its next upload is refused.
        over = client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("x.jsonl", b"{}\n")})
        assert over.status_code == 413 and over.json()["error"]["code"] == "storage_quota_exceeded"
