"""Models on Ray Serve through the same API: a causal LM streams token by token from its replica through a
streaming handle, a client that leaves a stream stops the replica's generation, the cluster's figures reach
/metrics, and the cluster has the two nodes the session started."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from openmaas.sdk import delta_text
from tests.cluster.test_ray_cluster import serve_apps
from tests.conftest import RayHead, Server
from tests.tiny_llm import build_tiny_causal_lm

HELLO = [{"role": "user", "content": "Hello there"}]
LLM = "llm-on-ray"


@pytest.fixture(scope="module")
def llm_on_ray(cluster_server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("llm-on-ray") / "model")
    with cluster_server.client() as client:
        assert client.import_model(directory, LLM)["task"] == "text-generation"
    return LLM


def app_of(server: Server, model: str) -> dict[str, Any]:
    [app] = [app for app in serve_apps(server) if f"-{model}-" in app["name"]]
    return app


@contextmanager
def replica_of(head: RayHead, app: dict[str, Any]) -> Iterator[Any]:
    """A deployment handle to a model's replica, from this test process as one more driver of the cluster."""
    import ray
    from ray import serve

    ray.init(address=head.address, namespace="openmaas", log_to_driver=False)
    try:
        yield serve.get_app_handle(app["name"].split("/")[0])
    finally:
        ray.shutdown()


def test_a_streamed_chat_answers_token_by_token_from_a_serve_replica(cluster_server: Server, llm_on_ray: str) -> None:
    options = {"max_tokens": 8, "temperature": 0}
    with cluster_server.client() as client:
        whole = client.chat(llm_on_ray, HELLO, **options)
        chunks = list(client.chat_stream(llm_on_ray, HELLO, **options, stream_options={"include_usage": True}))
        text = client.complete(llm_on_ray, "Users upload", **options)["choices"][0]["text"]
        completion_chunks = list(client.complete_stream(llm_on_ray, "Users upload", **options))
    assert whole["usage"]["completion_tokens"] == 8
    content = whole["choices"][0]["message"]["content"]
    pieces = [delta_text(chunk) for chunk in chunks if chunk["choices"]]
    assert len([piece for piece in pieces if piece]) > 2 and "".join(pieces) == content  # piece by piece
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert "".join(delta_text(chunk) for chunk in completion_chunks) == text and text
    app = app_of(cluster_server, llm_on_ray)  # decoded by its Serve replica, not in the API process
    assert app["replicas"].get("RUNNING") == 1, app


def test_a_client_that_leaves_a_stream_stops_its_generation_on_the_replica(
    cluster_server: Server, ray_cluster: RayHead, llm_on_ray: str
) -> None:
    with cluster_server.http() as admin:  # deployed, and the replica's handle at hand before the stream starts
        assert admin.post(f"/v1/models/{llm_on_ray}/load").status_code == 200
    with replica_of(ray_cluster, app_of(cluster_server, llm_on_ray)) as replica:
        before = replica.describe.remote().result(timeout_s=30)["cancelled"]
        body = {"model": llm_on_ray, "prompt": "Users upload", "max_tokens": 480, "temperature": 0, "stream": True}
        with cluster_server.http() as client, client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            read = 0
            for line in response.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    read += 1
                if read == 2:
                    break  # and the connection closes mid-stream
        deadline = time.monotonic() + 20
        while (state := replica.describe.remote().result(timeout_s=30))["cancelled"] == before:
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["generating"] == 0, state
    with cluster_server.client() as client:  # the replica serves the next caller
        answer = client.complete(llm_on_ray, "Users upload", max_tokens=3, temperature=0)
        assert answer["usage"]["completion_tokens"] == 3


def test_metrics_show_the_cluster_and_its_replicas(cluster_server: Server, llm_on_ray: str) -> None:
    with cluster_server.http() as admin:
        assert admin.post(f"/v1/models/{llm_on_ray}/load").status_code == 200
        text = admin.get("/metrics").text
    figures = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("openmaas_cluster_", "openmaas_serve_"))
    }
    assert figures['openmaas_cluster_nodes{state="alive"}'] == 2, figures
    assert figures["openmaas_cluster_cpus"] == 3
    assert 0 <= figures["openmaas_cluster_cpus_available"] < 3  # the replica holds some
    assert figures['openmaas_serve_replicas{state="RUNNING"}'] >= 1, figures
    assert figures['openmaas_serve_deployments{status="HEALTHY"}'] >= 1, figures


def test_the_embedded_server_reports_no_cluster_figures(http: Any) -> None:
    text = http.get("/metrics").text
    assert "openmaas_cluster_nodes" not in text and "openmaas_serve_replicas" not in text


def test_a_chat_model_the_cluster_cannot_place_answers_503_with_retry_after(
    start_server: type[Server], ray_cluster: RayHead, tmp_path: Path
) -> None:
    from tests.contract.test_metadata_store import _postgres_url

    urls = _postgres_url()
    server = None
    try:
        server = start_server(
            OPENMAAS_CLUSTER=ray_cluster.address,
            OPENMAAS_DATABASE_URL=next(urls),
            OPENMAAS_RAY_CPUS_PER_REPLICA="8",  # the cluster has 3, 2 on its biggest node
            OPENMAAS_RAY_PLACEMENT_TIMEOUT_S="3",
            OPENMAAS_FOUNDATION_MODELS="[]",
        )
        with server.client() as client:
            client.import_model(build_tiny_causal_lm(tmp_path / "model", seed=3), "unplaced-llm")
        with server.http() as admin:
            started = time.monotonic()
            body = {"model": "unplaced-llm", "messages": HELLO, "stream": True}
            response = admin.post("/v1/chat/completions", json=body)
            assert time.monotonic() - started < 30
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "3"
        error = response.json()["error"]
        assert error["code"] == "model_not_placed" and "8 CPU" in error["message"], error
        deadline = time.monotonic() + 20  # its deployment is withdrawn, not left waiting for room
        while [app for app in serve_apps(server) if "unplaced-llm" in app["name"]]:
            assert time.monotonic() < deadline, serve_apps(server)
            time.sleep(0.2)
    finally:
        if server is not None:
            server.stop()
        next(urls, None)


def test_a_lora_job_trains_on_the_cluster_and_its_version_streams_a_chat_from_serve(
    cluster_server: Server, ray_cluster: RayHead, llm_on_ray: str, tmp_path: Path
) -> None:
    from tests.cluster.test_ray_cluster import ray_logs_mention

    rows = ["Users upload datasets, train models, and call them over HTTP."] * 8
    (tmp_path / "lines.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    options = {"max_tokens": 8, "temperature": 0}
    with cluster_server.client() as client:
        dataset = client.upload_dataset(tmp_path / "lines.txt", kind="text")["id"]
        hyperparameters = {"base_model": llm_on_ray, "r": 4, "learning_rate": 5e-2, "max_steps": 6, "batch_size": 4}
        job = client.create_job(dataset, "lora-chat", recipe="lora", hyperparameters=hyperparameters)
        final = client.wait_for_job(job["id"], timeout=240)
        assert final["status"] == "succeeded", (final, cluster_server.log())
        assert ray_logs_mention(ray_cluster, f"openmaas-job-{job['id']}")  # it trained as a Ray task
        whole = client.chat("lora-chat", HELLO, **options)
        chunks = list(client.chat_stream("lora-chat", HELLO, **options))
        base = client.chat(llm_on_ray, HELLO, **options)["choices"][0]["message"]["content"]
    content = whole["choices"][0]["message"]["content"]
    pieces = [delta_text(chunk) for chunk in chunks if chunk["choices"]]
    assert len([piece for piece in pieces if piece]) > 2 and "".join(pieces) == content  # streamed piece by piece
    assert content != base  # the adapter changed the answers
    app = app_of(cluster_server, "lora-chat")  # decoded by a Serve replica, not in the API process
    assert app["replicas"].get("RUNNING") == 1, app
