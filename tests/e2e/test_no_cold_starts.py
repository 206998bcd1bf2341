"""No cold start a user waits on: preloaded models (/readyz says when they are in). (SmolLM2 is served from its
GGUF file as it is, with nothing converted: tests/e2e/test_smollm2.py.)"""

from __future__ import annotations

import time

import httpx

from tests.conftest import Server

ENCODER = "all-minilm-l6-v2"


def load_count(server: Server, model: str) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    prefix = f'openmaas_model_load_seconds_count{{model="{model}"'
    line = next((x for x in metrics.splitlines() if x.startswith(prefix)), "")
    return float(line.rpartition(" ")[2] or 0)


def test_preloaded_models_load_after_start_and_readyz_says_when(start_server: type[Server]) -> None:
    server = start_server(OPENMAAS_PRELOAD_MODELS=f'["{ENCODER}", "no-such-model"]')  # returns on /healthz 200
    first = httpx.get(f"{server.url}/readyz")
    # A fresh data directory exports MiniLM's ONNX graph first: seconds, while /healthz already answers.
    assert first.status_code == 503, first.text
    assert first.json()["status"] == "loading" and ENCODER in first.json()["loading"]
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    deadline = time.monotonic() + 180
    while (ready := httpx.get(f"{server.url}/readyz")).status_code == 503:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.5)
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["loading"] == [] and body["loaded"] == [ENCODER]
    assert "no model version matches 'no-such-model'" in body["failed"]["no-such-model"]
    assert load_count(server, ENCODER) == 1
    with server.http() as http:
        started = time.perf_counter()
        assert http.post("/v1/embeddings", json={"model": ENCODER, "input": "warm"}).status_code == 200
        seconds = time.perf_counter() - started
    assert load_count(server, ENCODER) == 1  # the first call found the model loaded
    assert seconds < 5, seconds


def test_servers_preload_nothing_when_told_so(server: Server) -> None:
    ready = httpx.get(f"{server.url}/readyz")  # the suite's servers set OPENMAAS_PRELOAD_MODELS=[]
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "loading": [], "loaded": [], "failed": {}}
