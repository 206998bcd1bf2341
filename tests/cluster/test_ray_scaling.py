"""A model's Ray Serve replicas set through the load API: a fixed count, re-scaled in place (up, then down) while
the version stays loaded, more than the cluster can place refused with the version left as it was, and an
autoscaling config that Serve runs with (GET /v1/cluster shows both)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.cluster.test_ray_cluster import serve_apps
from tests.conftest import RayHead, Server
from tests.e2e.test_job_lifecycle import small_dataset

MODEL = "scaled-on-ray"
TEXTS = ["alpha beta spam spam spam", "gamma delta omega"]


def deployment_when(server: Server, done: Any, timeout: float = 60) -> dict[str, Any]:
    """The model's deployment in GET /v1/cluster, once `done(deployment)` (Serve stops a replica after the load
    that asked for fewer answers)."""
    deadline = time.monotonic() + timeout
    while True:
        [app] = [app for app in serve_apps(server) if f"-{MODEL}-" in app["name"]]
        if done(app) or time.monotonic() > deadline:
            return app
        time.sleep(0.5)


def replica_ids(head: RayHead, app: dict[str, Any]) -> set[str]:
    """The ids of the deployment's live replicas, as Serve's controller lists them, read from this test process
    as one more driver of the cluster."""
    import ray
    from ray.serve.context import _get_global_client

    ray.init(address=head.address, namespace="openmaas", log_to_driver=False)
    try:
        client = _get_global_client()
        assert client is not None
        details = client.get_serve_details()["applications"][app["name"].split("/")[0]]
        return {replica["replica_id"] for replica in details["deployments"]["model"]["replicas"]}
    finally:
        ray.shutdown()


def test_replicas_set_through_the_load_api_rescale_the_served_version_in_place(
    cluster_server: Server, ray_cluster: RayHead, tmp_path: Path
) -> None:
    with cluster_server.client() as client:
        dataset = small_dataset(client, tmp_path, MODEL)
        job = client.create_job(dataset, MODEL, hyperparameters={"epochs": 8, "batch_size": 4})
        assert client.wait_for_job(job["id"], timeout=240)["status"] == "succeeded"
        first = client.load_model(MODEL, max_batch_size=8)
        assert first["replicas"] == 1 and first["autoscaling"] is None, first
        [original] = replica_ids(ray_cluster, deployment_when(cluster_server, lambda app: True))

        two = client.load_model(MODEL, replicas=2)
        assert two["replicas"] == 2 and two["autoscaling"] is None, two
        # Re-scaled, not reloaded: the pool kept the version (its load time) and its batch settings.
        assert two["load_seconds"] == first["load_seconds"] and two["max_batch_size"] == 8, (first, two)
        app = deployment_when(cluster_server, lambda app: app["replicas"] == {"RUNNING": 2})
        assert app["replicas"] == {"RUNNING": 2} and app["target_replicas"] == 2 and app["autoscaling"] is None, app
        at_two = replica_ids(ray_cluster, app)
        assert original in at_two  # one replica more: the first one was not replaced
        # Other batch settings reload this process's queue, not the replicas: the reload finds them running.
        rebatched = client.load_model(MODEL, max_batch_size=16)
        assert rebatched["max_batch_size"] == 16 and rebatched["replicas"] == 2, rebatched
        assert replica_ids(ray_cluster, app) == at_two
        predictions = client.predict(MODEL, TEXTS * 10)["predictions"]
        assert [p["label"] for p in predictions] == ["b", "a"] * 10

        one = client.load_model(MODEL, replicas=1)
        assert one["replicas"] == 1 and one["load_seconds"] == rebatched["load_seconds"], one
        app = deployment_when(cluster_server, lambda app: app["replicas"] == {"RUNNING": 1})
        assert app["replicas"] == {"RUNNING": 1} and app["target_replicas"] == 1, app
        assert [p["label"] for p in client.predict(MODEL, TEXTS)["predictions"]] == ["b", "a"]

    with cluster_server.http() as admin:  # 16 × 0.5 CPU: more than the cluster's 3
        started = time.monotonic()
        refused = admin.post(f"/v1/models/{MODEL}/load", json={"replicas": 16})
        assert refused.status_code == 503 and time.monotonic() - started < 90, refused.text
        error = refused.json()["error"]
        assert error["code"] == "model_not_placed" and "goes on with replicas=1" in error["message"], error
    app = deployment_when(cluster_server, lambda app: app["replicas"] == {"RUNNING": 1})
    assert app["replicas"] == {"RUNNING": 1} and app["target_replicas"] == 1, app
    with cluster_server.client() as client:
        again = client.load_model(MODEL)  # no replicas named: what it runs with
        assert again["replicas"] == 1 and again["load_seconds"] == rebatched["load_seconds"], again  # never dropped
        assert [p["label"] for p in client.predict(MODEL, TEXTS)["predictions"]] == ["b", "a"]

        bounds = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4}
        scaled = client.load_model(MODEL, autoscaling=bounds)
        assert scaled["autoscaling"] == bounds and scaled["replicas"] is None, scaled
        app = deployment_when(cluster_server, lambda app: app["autoscaling"] is not None)
        assert app["autoscaling"] is not None, app
        assert {name: app["autoscaling"][name] for name in bounds} == bounds, app
        assert [p["label"] for p in client.predict(MODEL, TEXTS)["predictions"]] == ["b", "a"]
        client.unload_model(MODEL)  # its replicas' CPUs back to the other tests
