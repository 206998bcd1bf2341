"""A server killed (SIGKILL) in the middle of a batch resumes it after a restart and answers every request once."""

from __future__ import annotations

import json
import time

import openai

from tests.conftest import ADMIN_KEY, Server


def test_a_killed_server_finishes_the_batch_answering_each_custom_id_once(start_server: type[Server]) -> None:
    server = start_server(OPENMAAS_FAILPOINT="batch_after_answer")  # dies right after the first answer is written
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    lines = [
        {
            "custom_id": f"id-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-minilm-l6-v2", "input": f"t{i}"},
        }
        for i in range(20)
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    file_id = oai.files.create(file=("crash.jsonl", data), purpose="batch").id
    batch = oai.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    assert server.process is not None
    deadline = time.monotonic() + 60
    while server.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.process.poll() is not None, "the failpoint did not kill the server"
    del server.env["OPENMAAS_FAILPOINT"]
    server.start()
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    deadline = time.monotonic() + 120
    while (batch := oai.batches.retrieve(batch.id)).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (20, 20, 0)
    output = [json.loads(line) for line in oai.files.content(batch.output_file_id or "").text.splitlines()]
    assert sorted(line["custom_id"] for line in output) == sorted(f"id-{i}" for i in range(20))
