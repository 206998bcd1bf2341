"""Serving under load on a real server: dynamic batching, a bounded queue, timeouts, eviction and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, DATASETS, Server

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
LONG_TEXT = "the quick brown fox jumps over the lazy dog " * 40  # far over 256 tokens: truncated to 256


def samples(server: Server, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{server.url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metric(server: Server, name: str, **labels: str) -> float:
    return sum(v for k, v in samples(server, name).items() if set(labels.items()) <= set(k))


def assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    """Same labels, scores equal to float rounding: a matrix product's last bits depend on the batch's shape."""
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["scores"] == pytest.approx(e["scores"], rel=1e-6, abs=1e-9)


def train(server: Server, name: str, rows: int, tmp: Path, **hp: object) -> None:
    lines = (DATASETS / "sms_spam" / "sms_spam.csv").read_text(encoding="utf-8").splitlines()
    path = tmp / f"{name}.csv"
    path.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    with server.client() as client:
        dataset = client.upload_dataset(path, name=name)
        job = client.create_job(dataset["id"], name, hyperparameters={"epochs": 1, **hp})
        assert client.wait_for_job(job["id"], timeout=120)["status"] == "succeeded"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(
        tmp_path_factory.mktemp("serving"),
        {"OPENMAAS_MODEL_MEMORY_MB": "1", "OPENMAAS_REQUEST_TIMEOUT_S": "3"},
    ).start()
    tmp = tmp_path_factory.mktemp("serving-data")
    train(instance, "spam-a", 3000, tmp)
    train(instance, "spam-b", 3000, tmp, seed=1)
    yield instance
    instance.stop()


async def post_many(server: Server, path: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=60) as client:
        return await asyncio.gather(*(client.post(path, json=body) for body in bodies))


def test_concurrent_requests_are_batched_and_keep_their_order(server: Server) -> None:
    with server.http() as http:
        loaded = http.post("/v1/models/spam-a/load", json={"max_batch_size": 64, "max_wait_ms": 200})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["max_batch_size"] == 64
        texts = [f"message {i}: " + ("WIN a FREE prize now" if i % 2 else "see you at lunch") for i in range(20)]
        alone = [http.post("/v1/models/spam-a/predict", json={"inputs": [t]}).json()["predictions"][0] for t in texts]
    count_before = metric(server, "openmaas_batch_size_count", model="spam-a")
    sum_before = metric(server, "openmaas_batch_size_sum", model="spam-a")
    bodies = [{"inputs": [t]} for t in texts] + [{"inputs": texts}]
    responses = asyncio.run(post_many(server, "/v1/models/spam-a/predict", bodies))
    assert all(r.status_code == 200 for r in responses)
    for response, expected in zip(responses, alone, strict=False):
        assert_same_predictions(response.json()["predictions"], [expected])
    assert_same_predictions(responses[-1].json()["predictions"], alone)  # a many-input request comes back in order
    batches = metric(server, "openmaas_batch_size_count", model="spam-a") - count_before
    items = metric(server, "openmaas_batch_size_sum", model="spam-a") - sum_before
    assert items == 40 and batches < 21, (batches, items)


def test_requests_are_counted_by_route_model_and_status(server: Server) -> None:
    with server.http() as http:
        http.post("/v1/models/spam-a/predict", json={"inputs": ["hello"]})
        http.post("/v1/models/spam-a/predict", json={"inputs": []})
    ok = metric(server, "openmaas_requests_total", route="/v1/models/{ref}/predict", model="spam-a", status="200")
    # Refused before its model was resolved: no model label (labels come only from the registry).
    bad = metric(server, "openmaas_requests_total", route="/v1/models/{ref}/predict", model="", status="400")
    assert ok >= 1 and bad >= 1
    assert metric(server, "openmaas_request_duration_seconds_count", route="/v1/models/{ref}/predict") >= 2
    assert metric(server, "openmaas_training_jobs", state="succeeded") == 2
    assert metric(server, "openmaas_model_load_seconds_count", model="spam-a") >= 1
    raw = httpx.get(f"{server.url}/metrics").text
    assert "/v1/models/spam-a" not in raw  # route templates only, never raw paths


def test_least_recently_used_models_are_evicted_under_the_memory_budget(server: Server) -> None:
    with server.http() as http:
        assert http.post("/v1/models/spam-a/predict", json={"inputs": ["x"]}).status_code == 200
        assert set(dict(k)["model"] for k in samples(server, "openmaas_loaded_model_bytes")) == {"spam-a"}
        assert http.post("/v1/models/spam-b/predict", json={"inputs": ["x"]}).status_code == 200
        # Both do not fit in 1 MB: the least recently used one went.
        assert set(dict(k)["model"] for k in samples(server, "openmaas_loaded_model_bytes")) == {"spam-b"}
        assert http.post("/v1/models/spam-a/predict", json={"inputs": ["x"]}).status_code == 200
        assert set(dict(k)["model"] for k in samples(server, "openmaas_loaded_model_bytes")) == {"spam-a"}
        unloaded = http.post("/v1/models/spam-a/unload")
        assert unloaded.status_code == 200 and samples(server, "openmaas_loaded_model_bytes") == {}


def test_a_full_queue_answers_429_with_retry_after_and_health_stays_up(server: Server) -> None:
    with server.http() as http:
        loaded = http.post(
            "/v1/models/all-minilm-l6-v2/load", json={"max_batch_size": 1, "max_wait_ms": 0, "max_queue_size": 2}
        )
        assert loaded.status_code == 200, loaded.text

    async def flood() -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=60) as client:
            body = {"model": "all-minilm-l6-v2", "input": [LONG_TEXT]}
            requests = [asyncio.ensure_future(client.post("/v1/embeddings", json=body)) for _ in range(24)]
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            health = await client.get("/healthz")
            health_seconds = time.perf_counter() - started
            assert health.status_code == 200
            return list(await asyncio.gather(*requests)), health_seconds

    responses, health_seconds = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    assert set(statuses) <= {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full" and refused.json()["error"]["type"] == "rate_limit_error"
    assert health_seconds < 1.0


def test_a_request_that_waits_too_long_gets_503(server: Server) -> None:
    with server.http() as http:
        http.post("/v1/models/all-minilm-l6-v2/load", json={"max_batch_size": 2, "max_queue_size": 4096})
        response = http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": [LONG_TEXT] * 400})
        assert response.status_code == 503, response.status_code
        error = response.json()["error"]
        assert error["code"] == "timeout" and "longer than 3s" in error["message"]
        assert http.get("/healthz").status_code == 200
        assert (
            http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "still serving"}).status_code == 200
        )


def test_load_and_unload_validate_their_input(server: Server) -> None:
    with server.http() as http:
        assert http.post("/v1/models/nope/load").status_code == 404
        bad = http.post("/v1/models/spam-a/load", json={"max_batch_size": 8, "max_queue_size": 2})
        assert bad.status_code == 400 and "max_queue_size" in bad.json()["error"]["message"]
        assert http.post("/v1/models/spam-a/load", json={"max_batch_size": 0}).status_code == 400


def test_the_embedded_server_refuses_replicas_before_loading(server: Server) -> None:
    with server.http() as http:
        http.post("/v1/models/spam-b/unload")
        for body, param in (
            ({"replicas": 2}, "replicas"),
            ({"autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2}}, "autoscaling"),
            ({"autoscaling": {"min_replicas": 0, "max_replicas": 1}}, "autoscaling"),  # one copy, not always one
        ):
            refused = http.post("/v1/models/spam-b/load", json=body)
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "replicas_need_a_cluster" and error["param"] == param, error
            assert "OPENMAAS_CLUSTER" in error["message"], error
            # Refused before the reference is even looked up: a missing model answers the same.
            assert http.post("/v1/models/nope/load", json=body).status_code == 422
        assert not any(dict(k)["model"] == "spam-b" for k in samples(server, "openmaas_loaded_model_bytes"))
        for bad in (
            {"replicas": 0},
            {"replicas": 65},
            {"replicas": 2, "autoscaling": {"max_replicas": 2}},
            {"autoscaling": {"min_replicas": 3, "max_replicas": 2}},
            {"autoscaling": {"target_ongoing_requests": 0}},
        ):
            assert http.post("/v1/models/spam-b/load", json=bad).status_code == 400, bad
        first = http.post("/v1/models/spam-b/load", json={"max_batch_size": 16})
        assert first.status_code == 200 and first.json()["replicas"] == 1, first.text
        # One replica is what it has: the batch settings stay, nothing is loaded again.
        again = http.post("/v1/models/spam-b/load", json={"replicas": 1}).json()
        assert again["replicas"] == 1 and again["autoscaling"] is None and again["max_batch_size"] == 16, again
        assert again["load_seconds"] == first.json()["load_seconds"]
