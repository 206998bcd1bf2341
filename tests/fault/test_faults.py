"""Faults: corrupt artifacts, killed workers and a killed server never take the service down or lose data."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx

from openmaas import Client
from openmaas.storage.artifacts.local import sha256_file
from tests.conftest import Server

ROWS = "text,label\n" + "".join(
    f"sample text number {i} {'spam offer' if i % 2 else 'hello friend'},{i % 2}\n" for i in range(400)
)


def upload(client: Client, tmp_path: Path, name: str = "d") -> str:
    path = tmp_path / f"{name}.csv"
    path.write_text(ROWS)
    return str(client.upload_dataset(path, name=name)["id"])


def worker_pid(job_id: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", f"openmaas.training.worker {job_id}"], capture_output=True, text=True)
        if found.stdout.strip():
            return int(found.stdout.split()[0])
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


def test_a_killed_worker_fails_its_job_with_the_reason(start_server: type[Server], tmp_path: Path) -> None:
    server = start_server()
    with server.client() as client:
        dataset = upload(client, tmp_path)
        job = client.create_job(dataset, "killed", hyperparameters={"epochs": 100_000})
        subprocess.run(["kill", "-9", str(worker_pid(job["id"]))], check=True)
        final = client.wait_for_job(job["id"], timeout=30)
        assert final["status"] == "failed"
        assert "SIGKILL" in final["reason"] and "out of memory" in final["reason"]
        assert client.job_events(job["id"])[-1]["type"] == "failed"
        # The server is fine and runs the next job.
        again = client.create_job(dataset, "after-kill", hyperparameters={"epochs": 1})
        assert client.wait_for_job(again["id"], timeout=120)["status"] == "succeeded"


def test_a_killed_server_leaves_a_sound_store_and_a_clear_job_state(start_server: type[Server], tmp_path: Path) -> None:
    server = start_server()
    with server.client() as client:
        dataset = upload(client, tmp_path)
        job = client.create_job(dataset, "orphaned", hyperparameters={"epochs": 100_000})
        pid = worker_pid(job["id"])
    server.kill()
    subprocess.run(["kill", "-9", str(pid)], check=False)  # the whole machine went down
    server.start()
    with server.client() as client:
        final = client.get_job(job["id"])
        assert final["status"] == "failed" and "interrupted" in final["reason"]
        assert client.get_dataset(dataset)["rows"] == 400
    with sqlite3.connect(server.data_dir / "openmaas.db") as db:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    for blob in (server.data_dir / "artifacts" / "blobs").rglob("*"):
        if blob.is_file():
            assert sha256_file(blob) == blob.name
    assert not list((server.data_dir / "artifacts" / "tmp").iterdir())
    assert httpx.get(f"{server.url}/healthz").status_code == 200
