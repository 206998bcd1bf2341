"""The same API in cluster mode: a server with OPENMAAS_CLUSTER on the session's Ray cluster, the machine's
Postgres (a schema of its own) and Redis. Jobs run as Ray Train trainers on the cluster; GET /v1/cluster
describes it; the embedded default refuses what only a cluster does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import RayHead, Server
from tests.contract.test_metadata_store import _postgres_url
from tests.e2e.test_job_lifecycle import small_dataset
from tests.fault.test_resume import sms_subset, wait_for_event

LONG = {"epochs": 100_000, "batch_size": 4, "checkpoint_every_steps": 20, "log_every_steps": 0}


def ray_logs_mention(head: RayHead, text: str) -> bool:
    for path in head.temp_dir.glob("session_*/logs/*"):
        if path.is_file() and text in path.read_text(errors="replace"):
            return True
    return False


def test_cluster_mode_refuses_sqlite_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "OPENMAAS_CLUSTER": "auto"}
    env.pop("OPENMAAS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "openmaas", "serve", "--data-dir", str(tmp_path), "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "OPENMAAS_DATABASE_URL=postgresql" in result.stderr and "SQLite" in result.stderr, result.stderr


def test_cluster_route_describes_both_ray_nodes(cluster_server: Server) -> None:
    with cluster_server.http() as admin:
        response = admin.get("/v1/cluster")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mode"] == "ray" and body["address"]
        # The head and the raylet joined to it with `ray start --address`.
        head, joined = sorted(body["nodes"], key=lambda node: not node["head"])
        assert head["alive"] and head["head"] and head["resources"]["CPU"] == 2
        assert joined["alive"] and not joined["head"] and joined["resources"]["CPU"] == 1
        assert head["node_id"] != joined["node_id"]
        assert body["total"]["CPU"] == 3 and 0 <= body["available"]["CPU"] <= 3
        assert isinstance(body["deployments"], list)
        tenant = admin.post("/v1/tenants", json={"name": "not-admin"}).json()
        key = admin.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["read"]}).json()["key"]
    with cluster_server.http(key) as reader:
        refused = reader.get("/v1/cluster")
        assert refused.status_code == 403 and refused.json()["error"]["message"]


def test_a_job_trains_on_ray_and_its_model_predicts(
    cluster_server: Server, ray_cluster: RayHead, tmp_path: Path
) -> None:
    with cluster_server.client() as client:
        dataset = small_dataset(client, tmp_path, "on-ray")
        job = client.create_job(dataset, "on-ray", hyperparameters={"epochs": 8, "batch_size": 4})
        final = client.wait_for_job(job["id"], timeout=240)
        assert final["status"] == "succeeded", (final, cluster_server.log())
        types = [event["type"] for event in client.job_events(job["id"])]
        assert types[0] == "started" and types[-1] == "succeeded" and types.count("epoch") == 8, types
        assert ray_logs_mention(ray_cluster, f"openmaas-job-{job['id']}")  # it ran as a Ray task
        predictions = client.predict("on-ray", ["alpha beta spam spam spam", "gamma delta omega"])["predictions"]
        assert [p["label"] for p in predictions] == ["b", "a"]


def test_cancel_stops_the_job_on_ray(cluster_server: Server, tmp_path: Path) -> None:
    with cluster_server.client() as client:
        dataset = small_dataset(client, tmp_path, "long-on-ray")
        job = client.create_job(dataset, "long-on-ray", hyperparameters=LONG)
        for event in client.stream_job_events(job["id"]):
            if event["type"] == "checkpoint":
                break
        client.cancel_job(job["id"])
        deadline = time.monotonic() + 60
        while client.get_job(job["id"])["status"] != "cancelled":
            assert time.monotonic() < deadline, client.get_job(job["id"])
            time.sleep(0.2)
        seen = len(client.job_events(job["id"]))
        time.sleep(3)  # a trainer still running would add checkpoints and steps
        assert len(client.job_events(job["id"])) == seen
    with cluster_server.http() as admin:  # the trainer's resources are given back
        groups = [k for k in admin.get("/v1/cluster").json()["available"] if k.startswith("CPU_group_")]
        assert not groups, groups
    with cluster_server.http() as admin:
        assert admin.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]  # kept


def test_a_cluster_takes_several_workers_and_refuses_more_than_the_bound(cluster_server: Server) -> None:
    with cluster_server.http() as admin:
        job = {"dataset": "ds_missing", "model": "wide", "recipe": "bow-mlp", "hyperparameters": {"num_workers": 2}}
        response = admin.post("/v1/jobs", json=job)
        assert response.status_code == 404 and response.json()["error"]["param"] == "dataset", response.text
        job["hyperparameters"] = {"num_workers": 257}
        response = admin.post("/v1/jobs", json=job)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == "hyperparameters.num_workers"


def test_two_data_parallel_workers_reach_the_quality_of_one(cluster_server: Server, tmp_path: Path) -> None:
    hyperparameters = {"epochs": 5, "batch_size": 16, "seed": 7, "log_every_steps": 0}
    finals = {}
    with cluster_server.client() as client:
        dataset = client.upload_dataset(sms_subset(tmp_path, rows=1200), name="sms-parallel")["id"]
        for workers in (2, 1):  # one after the other: the two would not both fit beside the Serve replicas
            model = f"sms-{workers}-workers"
            job = client.create_job(dataset, model, hyperparameters={**hyperparameters, "num_workers": workers})
            finals[workers] = client.wait_for_job(job["id"], timeout=300)
            assert finals[workers]["status"] == "succeeded", (finals[workers], cluster_server.log())
            started = next(e for e in client.job_events(job["id"]) if e["type"] == "started")
            assert started["data"].get("workers", 1) == workers
        versions = {workers: client.get_model(f"sms-{workers}-workers")["versions"][0] for workers in (1, 2)}
    one, two = (versions[workers]["metrics"] for workers in (1, 2))
    # Each step of two workers trains two batches: half the steps over the same epochs and rows.
    assert two["steps"] * 2 in (one["steps"], one["steps"] + 1), (one["steps"], two["steps"])
    assert two["workers"] == 2 and "workers" not in one
    assert one["val_accuracy"] >= 0.9, one
    assert abs(two["val_accuracy"] - one["val_accuracy"]) <= 0.03, (one["val_accuracy"], two["val_accuracy"])


def test_embeddings_answer_in_cluster_mode(cluster_server: Server) -> None:
    with cluster_server.http() as admin:
        response = admin.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["hello", "world"]})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert len(data) == 2 and len(data[0]["embedding"]) == 384


def test_the_embedded_server_refuses_two_workers(http: httpx.Client) -> None:
    response = http.post(
        "/v1/jobs",
        json={"dataset": "ds_missing", "model": "wide", "recipe": "bow-mlp", "hyperparameters": {"num_workers": 2}},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "hyperparameters.num_workers" and "OPENMAAS_CLUSTER" in error["message"]
    assert http.get("/v1/cluster").json() == {
        "mode": "embedded", "address": None, "nodes": [], "total": {}, "available": {}, "deployments": []
    }


def test_a_job_the_cluster_cannot_place_is_queued_again_with_the_reason_then_fails(
    start_server: type[Server], ray_cluster: RayHead, tmp_path: Path
) -> None:
    urls = _postgres_url()
    server = None
    try:
        server = start_server(
            OPENMAAS_CLUSTER=ray_cluster.address,
            OPENMAAS_DATABASE_URL=next(urls),
            OPENMAAS_RAY_CPUS_PER_WORKER="8",  # the cluster has 3
            OPENMAAS_RAY_PLACEMENT_TIMEOUT_S="2",
            OPENMAAS_JOB_MAX_ATTEMPTS="2",
            OPENMAAS_FOUNDATION_MODELS="[]",
        )
        with server.client() as client:
            dataset = small_dataset(client, tmp_path, "too-big")
            job = client.create_job(dataset, "too-big", hyperparameters={"epochs": 1})
            deadline = time.monotonic() + 30
            while "waiting for resources" not in str((seen := client.get_job(job["id"])).get("reason")):
                assert time.monotonic() < deadline, seen
                time.sleep(0.05)
            assert seen["status"] == "queued" and "no room for 1 worker(s) × 8 CPU" in seen["reason"], seen
            final = client.wait_for_job(job["id"], timeout=120)
            events = client.job_events(job["id"])
        assert final["status"] == "failed", final
        retried = [event for event in events if event["type"] == "retrying"]
        assert retried and "could not place 1 worker(s) × 8 CPU" in retried[0]["data"]["reason"], events
        assert "could not place" in str(final), final
        assert "waiting" in [event["type"] for event in events], events
    finally:
        if server is not None:
            server.stop()  # before its schema is dropped
        next(urls, None)


def ray_train_workers(head: RayHead) -> list[psutil.Process]:
    raylets = [process for process in head.processes() if process.name() == "raylet"]
    return [
        child
        for raylet in raylets
        for child in raylet.children(recursive=True)
        if "RayTrainWorker" in " ".join(child.cmdline())
    ]


def test_a_killed_ray_worker_resumes_the_job_to_identical_weights(
    cluster_server: Server, ray_cluster: RayHead, tmp_path: Path
) -> None:
    hyperparameters = {"epochs": 4, "batch_size": 2, "seed": 7, "checkpoint_every_steps": 50, "log_every_steps": 0}
    with cluster_server.client() as client:
        dataset = client.upload_dataset(sms_subset(tmp_path, rows=300), name="sms-on-ray")["id"]
        job = client.create_job(dataset, "killed-on-ray", hyperparameters=hyperparameters)
        checkpoint = wait_for_event(client, job["id"], "checkpoint")
        [worker] = ray_train_workers(ray_cluster)
        worker.kill()  # SIGKILL, mid-epoch: Ray Train starts its worker group again
        final = client.wait_for_job(job["id"], timeout=300)
        assert final["status"] == "succeeded" and final["attempts"] == 1, final
        resumed = next(e for e in client.job_events(job["id"]) if e["type"] == "resumed")
        assert resumed["data"]["step"] >= checkpoint["data"]["step"]
        straight = client.create_job(dataset, "straight-on-ray", hyperparameters=hyperparameters)
        assert client.wait_for_job(straight["id"], timeout=300)["status"] == "succeeded"
        resumed_version = client.get_model("killed-on-ray")["versions"][0]
        straight_version = client.get_model("straight-on-ray")["versions"][0]
    assert resumed_version["artifact_sha256"] == straight_version["artifact_sha256"]


def serve_apps(server: Server) -> list[dict]:
    with server.http() as admin:
        return [d for d in admin.get("/v1/cluster").json()["deployments"] if d["name"].startswith("om-")]


def test_models_are_served_by_ray_serve_replicas(cluster_server: Server, tmp_path: Path) -> None:
    with cluster_server.client() as client:
        dataset = small_dataset(client, tmp_path, "served-on-ray")
        job = client.create_job(dataset, "served-on-ray", hyperparameters={"epochs": 8, "batch_size": 4})
        assert client.wait_for_job(job["id"], timeout=240)["status"] == "succeeded"
        texts = ["alpha beta spam spam spam", "gamma delta omega"] * 20
        predictions = client.predict("served-on-ray", texts)["predictions"]
        assert [p["label"] for p in predictions] == ["b", "a"] * 20
    with cluster_server.http() as admin:
        embedded = admin.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["hi", "there"]})
        assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) == 384
    apps = serve_apps(cluster_server)
    assert len(apps) >= 2 and all(app["replicas"].get("RUNNING") == 1 for app in apps), apps
    assert any("served-on-ray" in app["name"] for app in apps), apps


def test_a_model_the_cluster_cannot_place_answers_503_with_retry_after(
    start_server: type[Server], ray_cluster: RayHead, tmp_path: Path
) -> None:
    urls = _postgres_url()
    server = None
    try:
        server = start_server(
            OPENMAAS_CLUSTER=ray_cluster.address,
            OPENMAAS_DATABASE_URL=next(urls),
            OPENMAAS_RAY_CPUS_PER_REPLICA="8",  # the cluster has 3, 2 on its biggest node
            OPENMAAS_RAY_CPUS_PER_WORKER="0.1",  # other tests' replicas may hold most of the 3
            OPENMAAS_RAY_PLACEMENT_TIMEOUT_S="3",
            OPENMAAS_FOUNDATION_MODELS="[]",
        )
        with server.client() as client:  # a model of its own: one no other test has deployed
            dataset = small_dataset(client, tmp_path, "unplaced")
            job = client.create_job(dataset, "unplaced", hyperparameters={"epochs": 1})
            final = client.wait_for_job(job["id"], timeout=240)
            assert final["status"] == "succeeded", final
        with server.http() as admin:
            started = time.monotonic()
            response = admin.post("/v1/models/unplaced/predict", json={"inputs": ["alpha"]})
            assert time.monotonic() - started < 30
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "3"
        error = response.json()["error"]
        assert error["code"] == "model_not_placed" and "8 CPU" in error["message"], error
    finally:
        if server is not None:
            server.stop()
        next(urls, None)
