"""The shipped chat model: SmolLM2-135M-Instruct, converted once from its GGUF file, answers through the
official `openai` client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import ADMIN_KEY, Server

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "OPENMAAS_FOUNDATION_MODELS": f'["{MODEL}"]',
        "OPENMAAS_FOUNDATION_CACHE_DIR": str(tmp_path_factory.mktemp("foundation-cache")),
    }
    server = Server(tmp_path_factory.mktemp("llm-server"), env).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_smollm2_is_converted_once_and_chats(llm_server: Server) -> None:
    client = openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    deadline = time.monotonic() + 300
    saw_preparing = False
    while True:  # the first start converts the GGUF file on a background thread; until then: 503 + Retry-After
        try:
            answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
            break
        except openai.APIStatusError as error:
            assert error.status_code == 503, error.response.text
            assert error.response.json()["error"]["code"] == "model_preparing"
            assert error.response.headers["retry-after"]
            saw_preparing = True
            assert time.monotonic() < deadline, "SmolLM2 was not ready within 300 s"
            time.sleep(2)
    assert saw_preparing
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
