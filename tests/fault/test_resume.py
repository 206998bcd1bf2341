"""Training survives: SIGKILL the server mid-job, start it again, and the job resumes to identical weights.

Also: a crash mid-upload or mid-registration leaves no partial dataset and no half-registered version.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from pathlib import Path

import httpx

from openmaas import Client
from openmaas.storage.artifacts import sha256_file
from tests.conftest import ADMIN_KEY, DATASETS, Server

SMS = DATASETS / "sms_spam" / "sms_spam.csv"
HYPERPARAMETERS = {"epochs": 5, "batch_size": 2, "seed": 7, "checkpoint_every_steps": 200, "log_every_steps": 200}


def sms_subset(tmp_path: Path, rows: int = 1200) -> Path:
    path = tmp_path / "sms_subset.csv"
    path.write_text("\n".join(SMS.read_text(encoding="utf-8").splitlines()[: rows + 1]) + "\n", encoding="utf-8")
    return path


def assert_store_is_sound(server: Server) -> None:
    with sqlite3.connect(server.data_dir / "openmaas.db") as db:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    for blob in (server.data_dir / "artifacts" / "blobs").rglob("*"):
        if blob.is_file():
            assert sha256_file(blob) == blob.name, blob


def wait_for_event(client: Client, job_id: str, kind: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in client.job_events(job_id):
            if event["type"] == kind:
                return event
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event for {job_id}")


def test_a_killed_server_resumes_the_job_to_identical_weights(start_server: type[Server], tmp_path: Path) -> None:
    server = start_server()
    with server.client() as client:
        dataset = client.upload_dataset(sms_subset(tmp_path), name="sms")["id"]
        job = client.create_job(dataset, "resumed", hyperparameters=HYPERPARAMETERS)
        checkpoint = wait_for_event(client, job["id"], "checkpoint")
    server.kill()  # SIGKILL: no shutdown hooks; the worker dies with its parent
    server.start()
    with server.client() as client:
        final = client.wait_for_job(job["id"], timeout=600)
        assert final["status"] == "succeeded", final
        kinds = [e["type"] for e in client.job_events(job["id"])]
        assert kinds.count("started") == 1 and "retrying" in kinds and "resumed" in kinds
        resumed = next(e for e in client.job_events(job["id"]) if e["type"] == "resumed")
        assert resumed["data"]["step"] >= checkpoint["data"]["step"]
        checkpoints = client.job_checkpoints(job["id"])
        assert 1 <= len(checkpoints) <= 3 and all(c["step"] > 0 for c in checkpoints)

        straight = client.create_job(dataset, "straight", hyperparameters=HYPERPARAMETERS)
        assert client.wait_for_job(straight["id"], timeout=600)["status"] == "succeeded"
        resumed_version = client.get_model("resumed")["versions"][0]
        straight_version = client.get_model("straight")["versions"][0]
        assert resumed_version["artifact_sha256"] == straight_version["artifact_sha256"]
        assert (
            resumed_version["metrics"]["history"][-1]["train_loss"]
            == straight_version["metrics"]["history"][-1]["train_loss"]
        )
    assert_store_is_sound(server)


def test_a_crash_mid_upload_leaves_no_dataset(start_server: type[Server]) -> None:
    server = start_server()
    body = SMS.read_bytes() * 20
    boundary = "XBOUNDARY"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    total = len(head) + len(body) + len(f"\r\n--{boundary}--\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            (
                f"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n"
            ).encode()
            + head
            + body[: len(body) // 2]
        )
        time.sleep(0.3)
        server.kill()
    server.start()
    with server.client() as client:
        assert client.list_datasets() == []
    assert list((server.data_dir / "artifacts" / "tmp").iterdir()) == []
    assert_store_is_sound(server)


def test_a_crash_between_blob_and_row_leaves_no_dataset(start_server: type[Server]) -> None:
    server = start_server(OPENMAAS_FAILPOINT="dataset_after_blob")
    with server.http() as http, contextlib.suppress(httpx.TransportError):  # the server dies mid-request
        http.post("/v1/datasets", files={"file": ("a.csv", b"text,label\nx,1\ny,0\n")}, data={"name": "a"})
    server.process.wait(10)  # type: ignore[union-attr]
    server.env.pop("OPENMAAS_FAILPOINT")
    server.start()
    with server.client() as client:
        assert client.list_datasets() == []
    assert_store_is_sound(server)


def test_a_crash_during_registration_leaves_no_half_registered_version(
    start_server: type[Server], tmp_path: Path
) -> None:
    server = start_server(OPENMAAS_FAILPOINT="before_register", OPENMAAS_JOB_MAX_ATTEMPTS="2")
    path = tmp_path / "small.csv"
    path.write_text("text,label\n" + "".join(f"row {i} {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(60)))
    with server.client() as client:
        dataset = client.upload_dataset(path, name="small")["id"]
        job = client.create_job(dataset, "never-registered", hyperparameters={"epochs": 2})
        final = client.wait_for_job(job["id"], timeout=120)
        assert final["status"] == "failed" and "SIGKILL" in final["reason"] and final["model_version"] is None
        assert "never-registered" not in [m["id"] for m in client.list_models()]
    with sqlite3.connect(server.data_dir / "openmaas.db") as db:
        assert (
            db.execute(
                "select count(*) from model_versions v join registered_models m on m.id = v.model_id "
                "where m.name = 'never-registered'"
            ).fetchone()[0]
            == 0
        )
    assert_store_is_sound(server)


def newer_checkpoint(client: Client, job_id: str, after: int, timeout: float = 60) -> int:
    """The id of the first checkpoint event after event `after` (one of the attempt now running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in client.job_events(job_id, after=after):
            if event["type"] == "checkpoint":
                return int(event["id"])
        time.sleep(0.05)
    raise AssertionError(f"no new checkpoint for {job_id}")


def test_server_kills_spend_no_attempt_and_every_killed_attempt_is_metered(
    start_server: type[Server], tmp_path: Path
) -> None:
    server = start_server(OPENMAAS_JOB_MAX_ATTEMPTS="3")
    hyperparameters = {"epochs": 100_000, "batch_size": 2, "checkpoint_every_steps": 50, "log_every_steps": 0}
    with server.client() as client:
        dataset = client.upload_dataset(sms_subset(tmp_path, rows=200), name="sms")["id"]
        job = client.create_job(dataset, "kills", hyperparameters=hyperparameters)
    since = 0  # the newest event when the attempt now running began
    for _ in range(3):  # as many kills as the job has attempts
        with server.client() as client:
            newer_checkpoint(client, job["id"], since)
        server.kill()
        server.start()  # requeues the job (a `retrying` event) before it answers
        with server.client() as client:
            since = client.job_events(job["id"])[-1]["id"]
    with server.client() as client:
        newer_checkpoint(client, job["id"], since)  # the job runs on: a 4th attempt, counted as the 1st
        running = client.get_job(job["id"])
        assert running["status"] == "running" and running["attempts"] == 1, running
        kinds = [e["type"] for e in client.job_events(job["id"])]
        assert kinds.count("retrying") == 3 and kinds.count("resumed") == 3 and "failed" not in kinds
        client.cancel_job(job["id"])
        assert client.wait_for_job(job["id"], timeout=60)["status"] == "cancelled"
        assert client.job_checkpoints(job["id"])
    with sqlite3.connect(server.data_dir / "openmaas.db") as db:
        seconds = [row[0] for row in db.execute("select seconds from usage_records where kind = 'training'")]
    assert len(seconds) == 4 and all(s > 0 for s in seconds), seconds  # one record per attempt, none lost
