"""Chat and completions through the official `openai` client (sync and async, whole and streamed), every
stream chunk checked against a JSON schema, on each engine: the torch engine (a tiny random Llama imported as a
Hugging Face directory) and the OpenVINO engine (the shipped SmolLM2 GGUF file imported as it is)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import jsonschema
import openai
import pytest

from openmaas.recipes.foundation import foundation_gguf
from tests.conftest import ADMIN_KEY, Server
from tests.tiny_llm import build_tiny_causal_lm

MODEL = "tiny-chat"
GGUF_MODEL = "gguf-chat"
HELLO = [{"role": "user", "content": "Say something."}]
# A request that runs to its max_tokens on each engine's model: the tiny random Llama rarely draws its EOS
# token; SmolLM2 counts on (to 332 tokens, greedy).
LONG = {
    MODEL: {"messages": HELLO, "max_tokens": 460},
    GGUF_MODEL: {
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": 300,
    },
}

CHUNK_SCHEMA = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string", "pattern": "^(chatcmpl|cmpl)-"},
        "object": {"enum": ["chat.completion.chunk", "text_completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "usage": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                    "properties": {
                        k: {"type": "integer", "minimum": 0} for k in ("prompt_tokens", "completion_tokens")
                    },
                },
            ]
        },
        "choices": {
            "type": "array",
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["index", "finish_reason"],
                "properties": {
                    "index": {"const": 0},
                    "finish_reason": {"enum": [None, "stop", "length"]},
                    "delta": {
                        "type": "object",
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                        "additionalProperties": False,
                    },
                    "text": {"type": "string"},
                },
            },
        },
    },
}


@pytest.fixture(scope="module", params=["torch", "openvino"])
def tiny_model(request: pytest.FixtureRequest, server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model each test runs on, by engine (the same suite answers on both)."""
    if request.param == "torch":
        path, name = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llm") / "model"), MODEL
    else:
        path, name = foundation_gguf("smollm2-135m-instruct"), GGUF_MODEL
    with server.http() as http:  # a GGUF import loads the model once: seconds, more on a busy machine
        answer = http.post("/v1/models/import", json={"path": str(path), "name": name}, timeout=300)
    assert answer.status_code == 201, answer.text
    assert answer.json()["task"] == "text-generation" and answer.json()["runtime"] == request.param
    return name


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


def sse_events(server: Server, path: str, body: dict) -> list[str]:
    """The raw `data:` payloads of a stream, in order, and nothing else but comments."""
    payloads = []
    with (
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as http,
        http.stream("POST", path, json=body) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                payloads.append(line[len("data: ") :])
            else:
                assert line == "" or line.startswith(":"), line
    return payloads


def test_chat_answers_with_the_openai_client(oai: openai.OpenAI, tiny_model: str) -> None:
    answer = oai.chat.completions.create(model=tiny_model, messages=HELLO, max_tokens=8, seed=1)
    assert answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-")
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0
    assert 1 <= answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_a_chat_stream_is_exactly_openais(server: Server, tiny_model: str) -> None:
    body = {
        "model": tiny_model,
        "messages": HELLO,
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
    }
    payloads = sse_events(server, "/v1/chat/completions", body)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        jsonschema.validate(chunk, CHUNK_SCHEMA)
        assert "error" not in chunk
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finished) == 1 and finished[0] is chunks[-2]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] <= 6
    assert all(c["usage"] is None for c in chunks[:-1])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1])
    whole = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={**body, "stream": False},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
    ).json()
    assert whole["choices"][0]["message"]["content"] == streamed  # greedy: the same text either way
    assert whole["usage"] == usage_chunk["usage"]


def test_streams_through_the_sync_client_and_completions(oai: openai.OpenAI, server: Server, tiny_model: str) -> None:
    pieces = []
    with oai.chat.completions.create(model=tiny_model, messages=HELLO, max_tokens=5, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    completion = oai.completions.create(model=tiny_model, prompt=["Users upload"], max_tokens=4, temperature=0)
    assert completion.object == "text_completion"
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage is not None and completion.usage.completion_tokens <= 4
    payloads = sse_events(
        server, "/v1/completions", {"model": tiny_model, "prompt": "Users upload", "max_tokens": 4, "stream": True}
    )
    assert payloads[-1] == "[DONE]"
    for payload in payloads[:-1]:
        jsonschema.validate(json.loads(payload), CHUNK_SCHEMA)


def test_the_async_client_streams_and_answers(server: Server, tiny_model: str) -> None:
    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0) as client:
            whole = await client.chat.completions.create(model=tiny_model, messages=HELLO, max_tokens=5, temperature=0)
            stream = await client.chat.completions.create(
                model=tiny_model, messages=HELLO, max_tokens=5, temperature=0, stream=True
            )
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return whole.choices[0].message.content or "", streamed

    whole, streamed = asyncio.run(run())
    assert whole == streamed


def test_seed_makes_sampling_repeatable_and_stop_ends_the_text(oai: openai.OpenAI, tiny_model: str) -> None:
    def sample(seed: int) -> str:
        answer = oai.completions.create(model=tiny_model, prompt="Users", max_tokens=12, temperature=1.0, seed=seed)
        return answer.choices[0].text

    first = sample(7)
    assert sample(7) == first
    greedy = oai.completions.create(model=tiny_model, prompt="Users", max_tokens=12, temperature=0).choices[0]
    assert greedy.finish_reason == "length" and len(greedy.text) >= 2
    stop = greedy.text[1:3]
    cut = oai.completions.create(model=tiny_model, prompt="Users", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == greedy.text[: greedy.text.index(stop)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content.0",
        ),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": []}, "messages"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_unsupported_or_bad_parameters_get_a_400_naming_them(
    http: httpx.Client, tiny_model: str, body: dict, param: str
) -> None:
    answer = http.post("/v1/chat/completions", json={"model": tiny_model, "messages": HELLO, **body})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error" and error["message"]


def test_the_wrong_kind_of_model_or_no_model_is_refused(http: httpx.Client, tiny_model: str) -> None:
    embedding = http.post("/v1/chat/completions", json={"model": "all-minilm-l6-v2", "messages": HELLO})
    assert embedding.status_code == 400 and embedding.json()["error"]["code"] == "wrong_task"
    missing = http.post("/v1/completions", json={"model": "no-such-model", "prompt": "hi"})
    assert missing.status_code == 404
    too_long = http.post("/v1/completions", json={"model": tiny_model, "prompt": "Users upload " * 5000})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    two = http.post("/v1/completions", json={"model": tiny_model, "prompt": ["a", "b"]})
    assert two.status_code == 400 and two.json()["error"]["param"] == "prompt"


def generated_tokens(http: httpx.Client, model: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f'openmaas_generated_tokens_total{{model="{model}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_disconnects_stops_its_generation(server: Server, http: httpx.Client, tiny_model: str) -> None:
    body = {"model": tiny_model, **LONG[tiny_model], "temperature": 0}
    limit = body["max_tokens"]
    assert http.post("/v1/chat/completions", json=body).json()["usage"]["completion_tokens"] == limit  # no early EOS
    before = generated_tokens(http, tiny_model)
    body["stream"] = True
    with (
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk: generation has begun
    # The generation ends soon after the hang-up; an uncancelled one would count all its tokens.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and generated_tokens(http, tiny_model) == before:
        time.sleep(0.2)
    used = generated_tokens(http, tiny_model) - before
    assert 0 < used < limit
    usage = http.get("/v1/usage", params={"group_by": "model"}).json()["data"]
    row = next(r for r in usage if r["model"] == tiny_model and r["kind"] == "inference")
    assert row["completion_tokens"] > 0


def test_tokens_per_minute_counts_prompt_and_completion_tokens(server: Server, tiny_model: str) -> None:
    with server.http() as admin:
        # A tenant of its own per engine: the parameterised runs share the session's server.
        name = f"chatty-{uuid.uuid4().hex[:8]}"
        tenant = admin.post("/v1/tenants", json={"name": name, "limits": {"tokens_per_minute": 30}}).json()
        key = admin.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["infer", "read"]}).json()["key"]
        assert admin.patch(f"/v1/models/{tiny_model}", json={"public": True}).status_code == 200
    try:
        check_token_budget(server, key, f"default/{tiny_model}")
    finally:
        with server.http() as admin:
            admin.patch(f"/v1/models/{tiny_model}", json={"public": False})


def check_token_budget(server: Server, key: str, tiny_model: str) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    first = client.completions.with_raw_response.create(model=tiny_model, prompt="Users", max_tokens=20, temperature=0)
    usage = first.parse().usage
    assert usage is not None and usage.completion_tokens == 20 and usage.prompt_tokens < 10
    # The headers after the call count its prompt; the completion is charged when the generation ends.
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 30 - usage.prompt_tokens
    # 30 - (prompt + 20 completion tokens) > 0: a second call is admitted, and it overspends the budget...
    client.completions.create(model=tiny_model, prompt="Users", max_tokens=20, temperature=0)
    # ...which would not be spent yet if only prompt tokens counted.
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model=tiny_model, prompt="Users", max_tokens=5)
    assert refused.value.response.headers["retry-after"]


def test_a_full_generation_queue_answers_429_at_once(start_server: type[Server], tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    server = start_server(OPENMAAS_MAX_QUEUED_GENERATIONS="1", OPENMAAS_GENERATION_BATCH_SIZE="1")
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llm") / "model")
    with server.http() as http:
        assert http.post("/v1/models/import", json={"path": str(directory), "name": MODEL}).status_code == 201
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 460, "temperature": 0}

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            await client.post("/v1/chat/completions", json={**long, "max_tokens": 1})  # loaded before the burst
            return list(await asyncio.gather(*(client.post("/v1/chat/completions", json=long) for _ in range(6))))

    answers = asyncio.run(burst())
    # One decodes, one waits in the queue's one place; the rest are refused at once instead of piling up.
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert all(a.json()["usage"]["completion_tokens"] == 460 for a in answers if a.status_code == 200)


def test_answers_match_the_served_schema_and_openais_types(server: Server, tiny_model: str) -> None:
    from openai.types import Completion as OpenAICompletion
    from openai.types.chat import ChatCompletion as OpenAIChatCompletion
    from openai.types.chat import ChatCompletionChunk as OpenAIChunk

    from openmaas.protocol.openai import ChatCompletionChunk, Completion

    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    schema = httpx.get(f"{server.url}/openapi.json").json()
    for path, body, parse in (
        ("/v1/chat/completions", {"messages": HELLO}, OpenAIChatCompletion),
        ("/v1/completions", {"prompt": "Once"}, OpenAICompletion),
    ):
        answer = httpx.post(
            f"{server.url}{path}", json={"model": tiny_model, "max_tokens": 4, **body}, headers=headers, timeout=60
        ).json()
        documented = schema["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(answer, {**documented, "components": schema["components"]})
        parse.model_validate(answer, strict=True)
    chunks = sse_events(
        server,
        "/v1/chat/completions",
        {
            "model": tiny_model,
            "messages": HELLO,
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    for payload in chunks[:-1]:
        ours = ChatCompletionChunk.model_validate_json(payload)
        assert ours.model_dump(mode="json", exclude_unset=True) == json.loads(payload)  # nothing unknown
        OpenAIChunk.model_validate_json(payload)
    for payload in sse_events(
        server, "/v1/completions", {"model": tiny_model, "prompt": "Once", "max_tokens": 3, "stream": True}
    )[:-1]:
        chunk = Completion.model_validate_json(payload)
        assert chunk.model_dump(mode="json", exclude_unset=True) == json.loads(payload)
