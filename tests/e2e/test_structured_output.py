"""Structured output (`response_format`) and logprobs through the official `openai` client: JSON that validates
against the schema from the shipped SmolLM2, a 400 naming the unsupported part, and logprobs shaped exactly as
OpenAI's types, whole and streamed, on the tiny random Llama of the shared server; and on SmolLM2, which the
OpenVINO engine serves, the log-probabilities of the tokens taken (the library gives no alternatives)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from openai.types import Completion as OpenAICompletion
from openai.types.chat import ChatCompletion as OpenAIChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChunk

from openmaas.protocol.openai import Completion
from tests.conftest import ADMIN_KEY, Server
from tests.e2e.test_smollm2 import MODEL as SMOLLM2
from tests.e2e.test_smollm2 import env_for
from tests.tiny_llm import build_tiny_causal_lm

TINY = "tiny-structured"
HELLO = [{"role": "user", "content": "Say something."}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
MOOD = {
    "type": "object",
    "properties": {"mood": {"enum": ["happy", "sad", "angry"]}},
    "required": ["mood"],
    "additionalProperties": False,
}
CITIES = {
    "type": "object",
    "properties": {
        "cities": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 16},
                    "country": {"type": "string", "maxLength": 16},
                },
                "required": ["city", "country"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["cities"],
    "additionalProperties": False,
}


def schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def tiny(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-structured") / "model")
    with server.http() as http:
        answer = http.post("/v1/models/import", json={"path": str(directory), "name": TINY}, timeout=300)
    assert answer.status_code == 201, answer.text
    return TINY


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


def test_an_enum_schema_constrains_even_a_random_model(oai: openai.OpenAI, tiny: str) -> None:
    for seed in (1, 2, 3):
        answer = oai.chat.completions.create(
            model=tiny, messages=HELLO, max_tokens=40, seed=seed, response_format=schema_format("mood", MOOD)
        )
        text = answer.choices[0].message.content or ""
        jsonschema.validate(json.loads(text), MOOD)
        assert answer.choices[0].finish_reason == "stop"  # the grammar ends the text when the value closes
    completion = oai.completions.create(
        model=tiny,
        prompt="Users",
        max_tokens=40,
        temperature=0,
        extra_body={"response_format": schema_format("mood", MOOD)},  # openai's completions do not name it
    )
    jsonschema.validate(json.loads(completion.choices[0].text), MOOD)


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        (
            schema_format("x", {"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}),
            "response_format.json_schema.schema",
        ),
        (
            schema_format("x", {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
            "response_format.json_schema.schema",
        ),
        ({"type": "json_schema", "json_schema": {"schema": MOOD}}, "response_format.json_schema.name"),
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_object", "json_schema": {"name": "x"}}, "response_format.json_schema"),
    ],
)
def test_an_unsupported_response_format_is_a_400_naming_the_part(
    oai: openai.OpenAI, tiny: str, response_format: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model=tiny, messages=HELLO, max_tokens=4, response_format=response_format)  # type: ignore[arg-type]
    error = refused.value.response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["message"]


def test_chat_logprobs_are_openais_and_greedy_takes_the_top_token(oai: openai.OpenAI, tiny: str) -> None:
    answer = oai.chat.completions.create(
        model=tiny, messages=HELLO, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    OpenAIChatCompletion.model_validate(answer.model_dump(), strict=True)
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == answer.usage.completion_tokens  # type: ignore[union-attr]
    # A random model writes halves of characters too: the text holds what decodes, the bytes are exact.
    text = b"".join(bytes(t.bytes or []) for t in content).decode(errors="replace").rstrip("\ufffd")
    assert text == answer.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)  # temperature 0: the most likely
        assert token.top_logprobs[0].token == token.token
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
        assert bytes(token.bytes or []).decode(errors="replace") == token.token
        assert sum(math.exp(t.logprob) for t in token.top_logprobs) <= 1 + 1e-5

    with oai.chat.completions.create(
        model=tiny, messages=HELLO, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, stream=True
    ) as stream:
        chunks = list(stream)
    for chunk in chunks:
        OpenAIChunk.model_validate(chunk.model_dump(), strict=True)
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]

    plain = oai.chat.completions.create(model=tiny, messages=HELLO, max_tokens=6, temperature=0)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == answer.choices[0].message.content


def test_completion_logprobs_are_openais(server: Server, oai: openai.OpenAI, tiny: str) -> None:
    answer = oai.completions.create(model=tiny, prompt="Users", max_tokens=5, temperature=0, logprobs=2)
    OpenAICompletion.model_validate(answer.model_dump(), strict=True)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs
    assert len(logprobs.tokens) == answer.usage.completion_tokens  # type: ignore[union-attr]
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) <= 2 and max(top.values()) == pytest.approx(value) and value <= 0
        assert top[token] == pytest.approx(value)

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as http:
        body = {"model": tiny, "prompt": "Users", "max_tokens": 5, "temperature": 0, "logprobs": 2, "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as response:
            payloads = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
    # openai's Completion type has no finish_reason null for a stream's chunks: the client does not validate them
    chunks = [Completion.model_validate_json(p) for p in payloads]
    streamed = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens or []]
    offsets = [o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset or []]
    assert streamed == logprobs.tokens and offsets == logprobs.text_offset

    with pytest.raises(openai.BadRequestError) as refused:
        oai.completions.create(model=tiny, prompt="Users", max_tokens=2, logprobs=6)
    assert refused.value.response.json()["error"]["param"] == "logprobs"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    server = Server(tmp_path_factory.mktemp("structured"), env_for(tmp_path_factory.mktemp("foundation"))).start()
    try:
        deadline = time.monotonic() + 400
        with server.http() as http:
            while http.get(f"/v1/models/{SMOLLM2}").status_code == 404:  # converted once, in a child process
                assert time.monotonic() < deadline, f"SmolLM2 was not ready: {server.log()}"
                time.sleep(1)
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=120)
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "schema", "ask"),
    [
        ("person", PERSON, "Invent a person: give a name and an age."),
        ("mood", MOOD, "I won the lottery today! How do I feel?"),
        ("cities", CITIES, "Name two capital cities and their countries."),
    ],
)
def test_smollm2_answers_json_that_validates_against_the_schema(
    smollm2: openai.OpenAI, name: str, schema: dict, ask: str
) -> None:
    answer = smollm2.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": ask}],
        max_tokens=60,
        temperature=0,
        response_format=schema_format(name, schema),  # type: ignore[arg-type]
    )
    text = answer.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), schema)
    assert answer.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_smollm2_json_object_mode_answers_an_object(smollm2: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Describe a cat as JSON with a name and a color."}]
    with smollm2.chat.completions.create(
        model=SMOLLM2, messages=ask, max_tokens=60, temperature=0, response_format={"type": "json_object"}, stream=True
    ) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict), text


@pytest.mark.slow
def test_smollm2_refuses_a_schema_its_engine_cannot_compile_and_goes_on(smollm2: openai.OpenAI) -> None:
    # llguidance (the check every engine shares) takes \p{L}; OpenVINO's xgrammar does not: a 400, no harm done
    letters = {"type": "object", "properties": {"word": {"type": "string", "pattern": "^\\p{L}+$"}}}
    ask = [{"role": "user", "content": "Give me a word."}]
    for _ in range(2):  # refused again, from a fresh probe pipeline
        with pytest.raises(openai.BadRequestError) as refused:
            smollm2.chat.completions.create(
                model=SMOLLM2, messages=ask, max_tokens=10, response_format=schema_format("w", letters)  # type: ignore[arg-type]
            )
        error = refused.value.response.json()["error"]
        assert error["param"] == "response_format.json_schema.schema", error
        assert "Unicode character class" in error["message"] and ".cc:" not in error["message"], error
    answer = smollm2.chat.completions.create(
        model=SMOLLM2, messages=ask, max_tokens=30, temperature=0, response_format=schema_format("mood", MOOD)  # type: ignore[arg-type]
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), MOOD)


@pytest.mark.slow
def test_smollm2_logprobs_are_openais(smollm2: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    answer = smollm2.chat.completions.create(model=SMOLLM2, messages=ask, max_tokens=20, temperature=0, logprobs=True)
    OpenAIChatCompletion.model_validate(answer.model_dump(), strict=True)
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and answer.usage is not None
    # <|im_end|> ends the turn and is counted, but OpenAI lists no end-of-text token
    ended = answer.choices[0].finish_reason == "stop"
    assert len(content) == answer.usage.completion_tokens - ended
    assert b"".join(bytes(t.bytes or []) for t in content).decode() == answer.choices[0].message.content
    assert all(t.logprob <= 0 and t.top_logprobs == [] for t in content)
    assert any(t.logprob < -1e-3 for t in content)  # real values: the library reports 0.0 when it computes none

    with smollm2.chat.completions.create(
        model=SMOLLM2, messages=ask, max_tokens=20, temperature=0, logprobs=True, stream=True
    ) as stream:
        chunks = list(stream)
    for chunk in chunks:
        OpenAIChunk.model_validate(chunk.model_dump(), strict=True)
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content], abs=1e-4)

    completion = smollm2.completions.create(
        model=SMOLLM2, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=0
    )
    OpenAICompletion.model_validate(completion.model_dump(), strict=True)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) and all(v <= 0 for v in logprobs.token_logprobs)

    with pytest.raises(openai.BadRequestError) as refused:  # no alternatives to list: refused, not invented
        smollm2.chat.completions.create(model=SMOLLM2, messages=ask, max_tokens=5, logprobs=True, top_logprobs=2)
    assert refused.value.response.json()["error"]["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as refused:
        smollm2.completions.create(model=SMOLLM2, prompt="The capital of France is", max_tokens=5, logprobs=2)
    assert refused.value.response.json()["error"]["param"] == "logprobs"


@pytest.mark.slow
def test_smollm2_constrained_and_free_generations_decode_together(smollm2: openai.OpenAI) -> None:
    # Each row of the pipeline's batch has its own grammar, or none: JSON where asked, free text beside it.
    asks = [
        {"response_format": schema_format("person", PERSON), "content": "Invent a person: give a name and an age."},
        {"response_format": schema_format("mood", MOOD), "content": "I won the lottery today! How do I feel?"},
        {"content": "What is the capital of France?", "logprobs": True},
        {"response_format": schema_format("cities", CITIES), "content": "Name two capital cities and countries."},
    ]

    def answer(ask: dict) -> OpenAIChatCompletion:
        extra = {k: v for k, v in ask.items() if k != "content"}
        messages = [{"role": "user", "content": ask["content"]}]
        return smollm2.chat.completions.create(
            model=SMOLLM2, messages=messages, max_tokens=60, temperature=0, **extra  # type: ignore[arg-type]
        )

    with ThreadPoolExecutor(len(asks)) as pool:
        person, mood, free, cities = [done.choices[0] for done in pool.map(answer, asks)]
    for choice, schema in ((person, PERSON), (mood, MOOD), (cities, CITIES)):
        jsonschema.validate(json.loads(choice.message.content or ""), schema)
        assert choice.finish_reason == "stop" and choice.logprobs is None
    assert "Paris" in (free.message.content or "") and not (free.message.content or "").startswith("{")
    tokens = free.logprobs.content if free.logprobs else None
    assert tokens and b"".join(bytes(t.bytes or []) for t in tokens).decode() == free.message.content
