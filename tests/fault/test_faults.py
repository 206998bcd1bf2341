"""Faults: corrupt artifacts, killed workers and a killed server never take the service down or lose data."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from openmaas import Client
from tests.conftest import Server

ROWS = "text,label\n" + "".join(
    f"sample text number {i} {'spam offer' if i % 2 else 'hello friend'},{i % 2}\n" for i in range(400)
)


def upload(client: Client, tmp_path: Path, name: str = "d") -> str:
    path = tmp_path / f"{name}.csv"
    path.write_text(ROWS)
    return str(client.upload_dataset(path, name=name)["id"])


def worker_pid(job_id: str, timeout: float = 30, exclude: int | None = None) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", f"openmaas.training.worker {job_id}"], capture_output=True, text=True)
        pids = [int(pid) for pid in found.stdout.split() if int(pid) != exclude]
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"no worker for {job_id}")


def test_a_corrupt_model_file_gives_a_clear_error_and_the_server_stays_up(
    start_server: type[Server], tmp_path: Path
) -> None:
    server = start_server()
    with server.client() as client:
        dataset = upload(client, tmp_path)
        for name, seed in (("healthy", 0), ("broken", 9)):
            job = client.create_job(dataset, name, hyperparameters={"epochs": 1, "seed": seed})
            assert client.wait_for_job(job["id"], timeout=120)["status"] == "succeeded"
    weights = server.data_dir / "artifacts" / "blobs"
    sha = _weights_blob(server, "broken", 1)
    assert sha != _weights_blob(server, "healthy", 1)
    (weights / sha[:2] / sha).write_bytes(b"not safetensors at all")

    with server.http() as http:
        response = http.post("/v1/models/broken/predict", json={"inputs": ["hello"]})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "model_load_failed" and "does not match its hash" in error["message"]
        assert http.get("/healthz").status_code == 200
        assert http.post("/v1/models/healthy/predict", json={"inputs": ["hello"]}).status_code == 200


def _weights_blob(server: Server, model: str, version: int) -> str:
    with sqlite3.connect(server.data_dir / "openmaas.db") as db:
        row = db.execute(
            "select v.files from model_versions v join registered_models m on m.id = v.model_id "
            "where m.name = ? and v.version = ?",
            (model, version),
        ).fetchone()
    return str(json.loads(row[0])["model.safetensors"])


def test_a_worker_that_keeps_dying_fails_its_job_with_the_reason(start_server: type[Server], tmp_path: Path) -> None:
    server = start_server(OPENMAAS_JOB_MAX_ATTEMPTS="2")
    with server.client() as client:
        dataset = upload(client, tmp_path)
        job = client.create_job(dataset, "killed", hyperparameters={"epochs": 100_000})
        first = worker_pid(job["id"])
        subprocess.run(["kill", "-9", str(first)], check=True)
        second = worker_pid(job["id"], exclude=first)  # retried: a new worker resumes the job
        subprocess.run(["kill", "-9", str(second)], check=True)
        final = client.wait_for_job(job["id"], timeout=60)
        assert final["status"] == "failed" and final["attempts"] == 2
        assert "SIGKILL" in final["reason"] and "out of memory" in final["reason"] and "2 attempts" in final["reason"]
        kinds = [e["type"] for e in client.job_events(job["id"])]
        assert "retrying" in kinds and kinds[-1] == "failed"
        # The server is fine and runs the next job.
        again = client.create_job(dataset, "after-kill", hyperparameters={"epochs": 1})
        assert client.wait_for_job(again["id"], timeout=120)["status"] == "succeeded"


def test_an_unexpected_worker_error_fails_the_job_without_showing_a_server_path(
    start_server: type[Server], tmp_path: Path
) -> None:
    server = start_server()
    (server.data_dir / "artifacts" / "checkpoints").write_text("a file where the checkpoints' directory should be")
    with server.client() as client:
        dataset = upload(client, tmp_path)
        job = client.create_job(dataset, "no-checkpoints", hyperparameters={"epochs": 2})
        final = client.wait_for_job(job["id"], timeout=120)
        assert final["status"] == "failed", final
        reasons = [
            final["reason"],
            *(e["data"]["reason"] for e in client.job_events(job["id"]) if e["type"] == "failed"),
        ]
    for reason in reasons:
        assert reason == "internal error in the worker (see the job log): NotADirectoryError", reason
        assert str(server.data_dir) not in reason
    assert "NotADirectoryError" in (server.data_dir / "logs" / "jobs" / f"{job['id']}.log").read_text()
