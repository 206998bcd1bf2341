"""A server killed (SIGKILL) while it validates fine-tunes' files validates them again after a restart: the
usable file's fine-tune gets its one training job and succeeds, the unusable one's fails with the file's line.
With two servers over one database, the restarted one and the other (once the lease expired) race for it: one
of them validates it again, once."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DATASETS, Server
from tests.contract.test_metadata_store import _postgres_url

ROWS = 60_000  # validation reads and cleans every row: long enough (seconds) to kill the server in the middle


def big_file(*, bad_last_line: bool) -> bytes:
    """SMS messages, each made unique by its number (the cleaner drops duplicates), as {"text", "label"} lines."""
    with (DATASETS / "sms_spam" / "sms_spam.csv").open(encoding="utf-8") as f:
        sms = [(row["text"], row["label"]) for row in csv.DictReader(f)]
    lines = [json.dumps({"text": f"{sms[i % len(sms)][0]} #{i}", "label": sms[i % len(sms)][1]}) for i in range(ROWS)]
    if bad_last_line:
        lines.append('{"text": "cut off')
    return "\n".join(lines).encode() + b"\n"


def test_a_killed_server_validates_its_fine_tunes_again_and_creates_one_job_each(start_server: type[Server]) -> None:
    server = start_server()
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=600)
    good = oai.files.create(file=("good.jsonl", big_file(bad_last_line=False)), purpose="fine-tune").id
    bad = oai.files.create(file=("bad.jsonl", big_file(bad_last_line=True)), purpose="fine-tune").id
    answered: dict[str, object] = {}

    def create(file_id: str) -> None:
        try:
            answered[file_id] = oai.fine_tuning.jobs.create(
                model="bow-mlp", training_file=file_id, hyperparameters={"n_epochs": 1, "batch_size": 1024}
            )
        except openai.APIConnectionError as error:  # the server died under the request
            answered[file_id] = error

    creating = [threading.Thread(target=create, args=(file_id,)) for file_id in (good, bad)]
    for thread in creating:
        thread.start()
    deadline = time.monotonic() + 60
    validating: list[str] = []
    while len(validating) < 2 and time.monotonic() < deadline:
        validating = [j.id for j in oai.fine_tuning.jobs.list() if j.status == "validating_files"]
        time.sleep(0.05)
    assert len(validating) == 2, "both fine-tunes should be validating their files"
    server.kill()
    for thread in creating:
        thread.join(30)
    # Killed in the middle: neither request was answered (an answer would mean validation had already ended).
    assert all(isinstance(answered[f], openai.APIConnectionError) for f in (good, bad)), answered

    server.start()
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    by_file = {j.training_file: j.id for j in oai.fine_tuning.jobs.list()}
    assert set(by_file) == {good, bad}
    deadline = time.monotonic() + 300
    ended = {}
    while len(ended) < 2 and time.monotonic() < deadline:
        for file_id, job_id in by_file.items():
            job = oai.fine_tuning.jobs.retrieve(job_id)
            if job.status in ("succeeded", "failed", "cancelled"):
                ended[file_id] = job
        time.sleep(0.5)
    assert set(ended) == {good, bad}, "a fine-tune stayed unfinished after the restart"
    assert ended[good].status == "succeeded", ended[good]
    assert ended[good].fine_tuned_model == f"ft:bow-mlp:default::{by_file[good]}"
    assert ended[bad].status == "failed" and ended[bad].error is not None
    assert ended[bad].error.param == "training_file" and f"line {ROWS + 1}" in ended[bad].error.message

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        jobs = http.get("/v1/jobs", params={"limit": 100}).json()["data"]
        datasets = http.get("/v1/datasets", params={"limit": 100}).json()["data"]
    assert [j["id"] for j in jobs] == [by_file[good]], "one training job, the usable file's"
    # The validation run again reused the dataset the killed run may have stored: one per fine-tune at most.
    assert len([d for d in datasets if d["name"] == f"fine-tune {good}"]) == 1
    events = list(oai.fine_tuning.jobs.list_events(by_file[good], limit=100))
    assert len([e for e in events if e.message.startswith("Data report")]) == 1


@pytest.fixture
def database() -> Iterator[str]:
    """A Postgres schema of its own, dropped after the test."""
    urls = _postgres_url()
    yield next(urls)
    next(urls, None)


def test_of_two_servers_over_one_database_one_validates_again_once(
    start_server: type[Server], tmp_path: Path, database: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    settings = {"OPENMAAS_DATABASE_URL": database, "OPENMAAS_JOB_LEASE_S": "5"}
    # Two node names, as on two hosts: b cannot tell that a died, so it waits for a's lease to expire, while a
    # restarted on its own node takes its dead predecessor's fine-tune at once.
    a = start_server(shared, OPENMAAS_NODE_NAME="node-a", **settings)
    b = start_server(shared, OPENMAAS_NODE_NAME="node-b", **settings)
    through_a = openai.OpenAI(base_url=f"{a.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=600)
    good = through_a.files.create(file=("good.jsonl", big_file(bad_last_line=False)), purpose="fine-tune").id
    answered: list[object] = []

    def create() -> None:
        try:
            answered.append(
                through_a.fine_tuning.jobs.create(
                    model="bow-mlp", training_file=good, hyperparameters={"n_epochs": 1, "batch_size": 1024}
                )
            )
        except openai.APIConnectionError as error:
            answered.append(error)

    creating = threading.Thread(target=create)
    creating.start()
    through_b = openai.OpenAI(base_url=f"{b.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    deadline = time.monotonic() + 60
    while not (jobs := list(through_b.fine_tuning.jobs.list())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [j.status for j in jobs] == ["validating_files"]
    a.kill()
    creating.join(30)
    assert isinstance(answered[0], openai.APIConnectionError), answered
    a.start()
    job_id = jobs[0].id
    deadline = time.monotonic() + 300
    while (job := through_b.fine_tuning.jobs.retrieve(job_id)).status not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job.status
        time.sleep(0.5)
    assert job.status == "succeeded", job
    with httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        assert [j["id"] for j in http.get("/v1/jobs", params={"limit": 100}).json()["data"]] == [job_id]
        datasets = http.get("/v1/datasets", params={"limit": 100}).json()["data"]
    assert [d["name"] for d in datasets] == [f"fine-tune {good}"]
    events = list(through_b.fine_tuning.jobs.list_events(job_id, limit=100))
    assert len([e for e in events if e.message.startswith("Data report")]) == 1
    # Both servers write the shared data directory's log: one of them validated it again, once.
    assert (shared / "server.log").read_text(errors="replace").count(f"fine-tune {job_id} again") == 1
