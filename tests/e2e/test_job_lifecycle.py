"""Job lifecycle features: stopping rules, live progress over SSE, idempotent retries, checkpoints on cancel."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx

from openmaas import Client
from tests.conftest import Server
from tests.e2e.test_train_and_predict import write_csv


def small_dataset(client: Client, tmp_path: Path, name: str, rows: int = 200, noisy: bool = False) -> str:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta"]
    data = []
    for i in range(rows):
        label = rng.choice("ab") if noisy else "ab"[i % 2]
        text = " ".join(rng.choice(words) for _ in range(6)) + (" spam" if label == "b" and not noisy else "")
        data.append((f"{text} {i}", label))
    return str(client.upload_dataset(write_csv(tmp_path / f"{name}.csv", data), name=name)["id"])


def test_max_steps_stops_exactly(client: Client, tmp_path: Path) -> None:
    dataset = small_dataset(client, tmp_path, "steps")
    job = client.create_job(dataset, "steps", hyperparameters={"epochs": 100, "batch_size": 10, "max_steps": 25})
    final = client.wait_for_job(job["id"], timeout=120)
    assert final["status"] == "succeeded"
    assert final["metrics"]["steps"] == 25 and final["metrics"]["stopped_reason"] == "max_steps"
    assert final["metrics"]["epochs"] == 2  # 18 steps per epoch: the second epoch was cut short


def test_early_stopping_on_validation_loss(client: Client, tmp_path: Path) -> None:
    dataset = small_dataset(client, tmp_path, "noisy", rows=300, noisy=True)  # random labels: val loss rises
    job = client.create_job(
        dataset, "early", hyperparameters={"epochs": 200, "early_stopping_patience": 3, "learning_rate": 0.01}
    )
    final = client.wait_for_job(job["id"], timeout=120)
    assert final["metrics"]["stopped_reason"] == "early_stopping"
    history = final["metrics"]["history"]
    assert len(history) < 200
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    assert len(history) - 1 - best == 3


def test_progress_streams_as_server_sent_events(server: Server, client: Client, tmp_path: Path) -> None:
    dataset = small_dataset(client, tmp_path, "sse")
    job = client.create_job(dataset, "sse", hyperparameters={"epochs": 4, "batch_size": 4, "log_every_steps": 20})
    headers = {"Authorization": f"Bearer {client._http.headers['Authorization'].split()[1]}"}
    events = []
    with httpx.stream(
        "GET", f"{server.url}/v1/jobs/{job['id']}/events", params={"stream": "true"}, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if block:  # a keep-alive comment is followed by a blank line too
                    events.append(block)
                block = {}
                continue
            field, _, value = line.partition(": ")
            block[field] = value
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "succeeded"
    assert kinds.count("epoch") == 4 and "step" in kinds and "checkpoint" in kinds
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    step = json.loads(next(e["data"] for e in events if e["event"] == "step"))
    assert step["data"]["loss"] > 0 and step["data"]["samples_per_second"] > 0
    # Reconnecting with Last-Event-ID continues after that event.
    later = httpx.get(
        f"{server.url}/v1/jobs/{job['id']}/events",
        params={"stream": "true"},
        headers={**headers, "Last-Event-ID": str(ids[-2])},
        timeout=30,
    )
    assert later.text.count("event: ") == 1 and "event: succeeded" in later.text
    assert [e["type"] for e in client.stream_job_events(job["id"])][-1] == "succeeded"


def test_idempotent_job_and_dataset_creation(http: httpx.Client, tmp_path: Path) -> None:
    upload = lambda key: http.post(  # noqa: E731
        "/v1/datasets",
        files={"file": ("i.csv", b"text,label\nidem a,1\nidem b,0\n")},
        data={"name": "i"},
        headers={"Idempotency-Key": key},
    )
    first, again = upload("ds-key-1"), upload("ds-key-1")
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    assert upload("ds-key-2").json()["id"] != first.json()["id"]
    body = {"dataset": first.json()["id"], "model": "idem", "hyperparameters": {"epochs": 1}}
    one = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-key"})
    two = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-key"})
    assert one.status_code == two.status_code == 201 and one.json()["id"] == two.json()["id"]
    other = http.post("/v1/jobs", json={**body, "model": "idem-other"}, headers={"Idempotency-Key": "job-key"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "x" * 300}).status_code == 400
    jobs = [j for j in http.get("/v1/jobs").json()["data"] if j["model"] == "idem"]
    assert len(jobs) == 1


def test_cancel_keeps_the_last_checkpoint(client: Client, tmp_path: Path) -> None:
    dataset = small_dataset(client, tmp_path, "keep")
    job = client.create_job(dataset, "keep", hyperparameters={"epochs": 100_000, "batch_size": 4})
    for event in client.stream_job_events(job["id"]):
        if event["type"] == "checkpoint":
            break
    client.cancel_job(job["id"])
    assert client.wait_for_job(job["id"], timeout=30)["status"] == "cancelled"
    checkpoints = client.job_checkpoints(job["id"])
    assert checkpoints and checkpoints[-1]["step"] > 0 and checkpoints[-1]["object"] == "training.job.checkpoint"


def test_reconnecting_with_the_newest_event_id_sends_only_newer_events(
    server: Server, client: Client, tmp_path: Path
) -> None:
    # One long, quiet epoch: after `started`, nothing new for a while, which is when a reconnect used to replay.
    dataset = small_dataset(client, tmp_path, "reconnect", rows=3000)
    job = client.create_job(dataset, "reconnect", hyperparameters={"epochs": 3, "batch_size": 1, "log_every_steps": 0})
    try:
        newest = next(client.stream_job_events(job["id"]))["id"]  # `started`
        later = client.job_events(job["id"], after=newest)
        assert all(e["id"] > newest for e in later)
        headers = {**client._http.headers, "Last-Event-ID": str(newest)}
        with httpx.stream(
            "GET", f"{server.url}/v1/jobs/{job['id']}/events", params={"stream": "true"}, headers=headers, timeout=60
        ) as response:
            assert response.status_code == 200
            first = next(int(line[4:]) for line in response.iter_lines() if line.startswith("id: "))
        assert first > newest, (first, newest)  # not `started` again: the job is not replayed
    finally:
        if client.get_job(job["id"])["status"] not in ("succeeded", "failed", "cancelled"):
            client.cancel_job(job["id"])
