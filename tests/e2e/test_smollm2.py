"""The shipped chat model: SmolLM2-135M-Instruct, converted once from its GGUF file in a child process of the
server, answers through the official `openai` client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import ADMIN_KEY, Server

MODEL = "smollm2-135m-instruct"
# Converted inside the server, the dequantised tensors, torch and transformers left it at ~870 MB resident (idle:
# ~105 MB, and again ~105 MB once the conversion runs in a child process); half-way between is the limit.
MAX_RSS_AFTER_CONVERSION_MB = 450


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap an orphan)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def env_for(cache: Path) -> dict[str, str]:
    return {"OPENMAAS_FOUNDATION_MODELS": f'["{MODEL}"]', "OPENMAAS_FOUNDATION_CACHE_DIR": str(cache)}


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("llm-server"), env_for(tmp_path_factory.mktemp("foundation-cache"))).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_smollm2_is_converted_once_and_chats(llm_server: Server) -> None:
    client = openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    # the first start converts the GGUF file in a child process; until it is registered: 503 + Retry-After
    with pytest.raises(openai.APIStatusError) as preparing:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert preparing.value.status_code == 503, preparing.value.response.text
    assert preparing.value.response.json()["error"]["code"] == "model_preparing"
    assert preparing.value.response.headers["retry-after"]
    deadline = time.monotonic() + 300
    with llm_server.http() as http:
        while http.get(f"/v1/models/{MODEL}").status_code == 404:
            assert time.monotonic() < deadline, f"SmolLM2 was not ready within 300 s: {llm_server.log()}"
            time.sleep(1)
    assert llm_server.process is not None
    assert resident_mb(llm_server.process.pid) < MAX_RSS_AFTER_CONVERSION_MB  # the conversion's memory left with it

    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.choices[0].finish_reason == "stop"  # <|im_end|> ends the turn

    with client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=20, temperature=0, stream=True
    ) as stream:
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == answer.choices[0].message.content

    with llm_server.http() as http:
        registered = http.get(f"/v1/models/{MODEL}").json()
    assert registered["versions"][0]["task"] == "text-generation"

    llm_server.stop()  # registered once: after a restart it answers at once, with nothing to convert
    llm_server.start()
    again = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert again.choices[0].text


def conversion_children(server: Server) -> list[int]:
    assert server.process is not None
    deadline = time.monotonic() + 60
    while not (converting := children(server.process.pid)):
        assert time.monotonic() < deadline, f"no conversion process started: {server.log()}"
        time.sleep(0.1)
    return converting


@pytest.mark.slow
def test_stopping_the_server_mid_conversion_ends_the_conversion(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server = Server(tmp_path / "server", env_for(cache))
    server.data_dir.mkdir()
    server.start()
    converting = conversion_children(server)
    server.stop()
    deadline = time.monotonic() + 20
    while any(running(pid) for pid in converting):
        assert time.monotonic() < deadline, f"the conversion process {converting} outlived the server"
        time.sleep(0.1)
    assert not (cache / MODEL).exists()  # nothing half-converted is taken for the model at the next start

    # The stopped conversion's working directory is left behind; the next start removes it before converting
    # again, and keeps the directory of the conversion it runs itself.
    abandoned = list(cache.glob(f".{MODEL}.converting-*"))
    assert len(abandoned) == 1, abandoned
    earlier = cache / f".{MODEL}-ab12cd_9"  # where an earlier release worked
    (earlier / "model").mkdir(parents=True)
    unrelated = cache / f".{MODEL}-v2-notes"
    unrelated.mkdir()
    server.start()
    try:
        conversion_children(server)
        now = list(cache.glob(f".{MODEL}.converting-*"))
        assert not abandoned[0].exists() and not earlier.exists() and len(now) == 1, now
        assert unrelated.is_dir()  # not a working directory's name: left alone
    finally:
        server.stop()
