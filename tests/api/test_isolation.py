"""One caller cannot hurt another: while tenant A calls a classifier, an embeddings model and a chat model that
tenant B shares, B sends every bad input we know of to the same queues. A gets only answers, B only 4xx (or 200
where its input is valid after all), and the chat model still answers at once afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import DATASETS, Server
from tests.tiny_llm import build_tiny_causal_lm

EMBEDDER = "all-minilm-l6-v2"
HELLO = [{"role": "user", "content": "Say something."}]
A_SECONDS = 12.0  # how long A keeps calling at least; B's bad inputs are sent meanwhile


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server whose admin tenant shares a bow-mlp classifier and a tiny chat model; keys of tenants A and B."""
    server = Server(tmp_path_factory.mktemp("isolation-server"), {"OPENMAAS_REQUEST_TIMEOUT_S": "15"}).start()
    tmp = tmp_path_factory.mktemp("isolation")
    lines = (DATASETS / "sms_spam" / "sms_spam.csv").read_text(encoding="utf-8").splitlines()[:301]
    (tmp / "spam.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with server.client() as client:
        dataset = client.upload_dataset(tmp / "spam.csv", name="spam")
        job = client.wait_for_job(client.create_job(dataset["id"], "spam", hyperparameters={"epochs": 1})["id"])
        assert job["status"] == "succeeded", job
    keys = {}
    with server.http() as admin:
        directory = build_tiny_causal_lm(tmp / "llm")
        imported = admin.post("/v1/models/import", json={"path": str(directory), "name": "chat"})
        assert imported.status_code == 201, imported.text
        for model in ("spam", "chat"):
            assert admin.patch(f"/v1/models/{model}", json={"public": True}).status_code == 200
        owner = admin.get("/v1/models/chat").json()["owned_by"]
        for tenant in ("tenant-a", "tenant-b"):
            created = admin.post("/v1/tenants", json={"name": tenant})
            assert created.status_code == 201, created.text
            key = admin.post(f"/v1/tenants/{created.json()['id']}/keys", json={"scopes": ["read", "infer"]})
            keys[tenant] = key.json()["key"]
    names = {"spam": f"{owner}/spam", "chat": f"{owner}/chat"}
    yield {"server": server, "a": keys["tenant-a"], "b": keys["tenant-b"], **names}
    server.stop()


def _bad_requests(spam: str, chat: str) -> list[tuple[str, bytes, bool]]:
    """(path, raw JSON body, whether the input is valid after all). Raw bytes: a JSON client would not send
    `\\ud800` escapes, `NaN` or a number past 64 bits as we mean them."""
    msgs = orjson.dumps(HELLO).decode()

    def chat_with(extra: str) -> bytes:
        return f'{{"model": "{chat}", "messages": {msgs}, "max_tokens": 4{extra}}}'.encode()

    def completion(prompt: str, extra: str = "") -> bytes:
        return f'{{"model": "{chat}", "prompt": {prompt}, "max_tokens": 4{extra}}}'.encode()

    def embed(value: str, extra: str = "") -> bytes:
        return f'{{"model": "{EMBEDDER}", "input": {value}{extra}}}'.encode()

    predict = f"/v1/models/{spam}/predict"
    bad: list[tuple[str, bytes, bool]] = []
    for seed in ("18446744073709551616", "-9223372036854775809", "9223372036854775808", "1e30", '"1"', "true", "1.5"):
        bad.append(("/v1/chat/completions", chat_with(f', "seed": {seed}'), False))
        bad.append(("/v1/completions", completion('"Users"', f', "seed": {seed}'), False))
    for value in ("NaN", "Infinity", "-Infinity", '"0.5"', "true", "3", "-1", "1e400"):
        bad.append(("/v1/chat/completions", chat_with(f', "temperature": {value}'), False))
    for value in ("0", "NaN", "1.5", '"1"'):
        bad.append(("/v1/chat/completions", chat_with(f', "top_p": {value}'), False))
    for value in ("0", "-1", "100000000000000000000000000000", '"4"', "4.5", "1e400", "null"):
        body = f'{{"model": "{chat}", "prompt": "x", "max_tokens": {value}}}'.encode()
        bad.append(("/v1/completions", body, value == "null"))
    for value in ("0", "-5", "100000000000000000000", '"3"'):
        bad.append(("/v1/embeddings", embed('"hello"', f', "dimensions": {value}'), False))
    for surrogate in ("\\ud800", "\\udc00", "a\\ud800b", "\\ud800\\u0041"):
        bad.append(("/v1/embeddings", embed(f'"{surrogate}"'), False))
        bad.append(("/v1/embeddings", embed(f'["fine", "{surrogate}", "also fine"]'), False))
        content = f'[{{"role": "user", "content": "{surrogate}"}}]'
        bad.append(("/v1/chat/completions", f'{{"model": "{chat}", "messages": {content}}}'.encode(), False))
        bad.append(("/v1/completions", completion(f'"{surrogate}"'), False))
        bad.append((predict, f'{{"inputs": ["fine", "{surrogate}"]}}'.encode(), False))
    bad.append(("/v1/embeddings", b'{"model": "' + EMBEDDER.encode() + b'", "input": "\xed\xa0\x80"}', False))
    for value in ('"hi"', "[]", "[1]", '[{"role": "user"}]', '[{"role": "robot", "content": "x"}]', "null"):
        bad.append(("/v1/chat/completions", f'{{"model": "{chat}", "messages": {value}}}'.encode(), False))
    for value in ("5", "[1, 2]", '["a", "b"]', "null", "[]"):
        bad.append(("/v1/completions", completion(value), False))
    for value in ("5", "[5]", '[""]', "[]", "null", '[""]'):
        bad.append(("/v1/embeddings", embed(value), False))
    for value in ('"text"', "[5]", "[]", "{}"):
        bad.append((predict, f'{{"inputs": {value}}}'.encode(), False))
    bad.append((predict, b'{"inputs": ["a"]', False))  # cut short
    bad.append(("/v1/chat/completions", b"[1, 2, 3]", False))
    # Valid after all: the limit of greedy sampling, an empty prompt, the widest seeds the schema states exactly.
    bad.append(("/v1/chat/completions", chat_with(', "temperature": 1e-300'), True))
    bad.append(("/v1/completions", completion('"Users"', ', "temperature": 5e-324, "top_p": 0.5'), True))
    bad.append(("/v1/completions", completion('""'), True))
    bad.append(("/v1/completions", completion('[""]', ', "stream": true'), True))
    bad.append(("/v1/chat/completions", chat_with(', "seed": 9007199254740991'), True))
    bad.append(("/v1/chat/completions", chat_with(', "seed": -9007199254740991'), True))
    bad.append(("/v1/embeddings", embed('"\\ud83d\\ude00 a pair is fine"'), True))
    return bad


async def _tenant_a(shared: dict[str, Any], until: asyncio.Event) -> list[tuple[str, int, str]]:
    """Predict, embeddings and chat (whole and streamed) from two loops each, until B is done."""
    answers: list[tuple[str, int, str]] = []
    headers = {"Authorization": f"Bearer {shared['a']}"}

    async def loop(client: httpx.AsyncClient, kind: str, worker: int) -> None:
        started = time.monotonic()
        count = 0
        while not until.is_set() or time.monotonic() - started < A_SECONDS:
            count += 1
            text = f"tenant A, worker {worker}, call {count}: WIN a FREE prize"
            try:
                if kind == "predict":
                    body: dict[str, Any] = {"inputs": [text, "lunch?"]}
                    response = await client.post(f"/v1/models/{shared['spam']}/predict", json=body)
                    ok = response.status_code == 200 and len(response.json()["predictions"]) == 2
                elif kind == "embed":
                    response = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": [text, "hello"]})
                    ok = response.status_code == 200 and len(response.json()["data"]) == 2
                else:
                    body = {"model": shared["chat"], "messages": HELLO, "max_tokens": 6, "stream": count % 2 == 0}
                    response = await client.post("/v1/chat/completions", json=body)
                    # A failure after the first byte of a stream travels in it as an `error` event.
                    whole = response.text.rstrip().endswith("data: [DONE]") and '"error"' not in response.text
                    ok = response.status_code == 200 and (not body["stream"] or whole)
            except httpx.TransportError as error:  # the server closed the connection (as it does after a 500)
                answers.append((kind, 0, repr(error)))
                continue
            answers.append((kind, response.status_code if ok else -response.status_code, response.text))

    async with httpx.AsyncClient(base_url=shared["server"].url, headers=headers, timeout=60) as client:
        await asyncio.gather(*(loop(client, kind, w) for kind in ("predict", "embed", "chat") for w in range(2)))
    return answers


async def _tenant_b(shared: dict[str, Any], until: asyncio.Event) -> list[tuple[str, bytes, bool, int, str]]:
    """Every bad request twice, eight at a time."""
    results: list[tuple[str, bytes, bool, int, str]] = []
    gate = asyncio.Semaphore(8)
    headers = {"Authorization": f"Bearer {shared['b']}", "Content-Type": "application/json"}

    async def send(client: httpx.AsyncClient, path: str, body: bytes, valid: bool) -> None:
        async with gate:
            try:
                response = await client.post(path, content=body, headers=headers)
            except httpx.TransportError as error:  # the server closed the connection (as it does after a 500)
                results.append((path, body, valid, 0, repr(error)))
                return
            results.append((path, body, valid, response.status_code, response.text))

    try:
        async with httpx.AsyncClient(base_url=shared["server"].url, timeout=60) as client:
            bad = _bad_requests(shared["spam"], shared["chat"]) * 2
            await asyncio.sleep(1.0)  # A's calls are under way
            await asyncio.gather(*(send(client, path, body, valid) for path, body, valid in bad))
    finally:
        until.set()
    return results


def test_one_caller_cannot_hurt_another(shared: dict[str, Any]) -> None:
    async def both() -> tuple[list[tuple[str, int, str]], list[tuple[str, bytes, bool, int, str]]]:
        until = asyncio.Event()
        return await asyncio.gather(_tenant_a(shared, until), _tenant_b(shared, until))

    started = time.monotonic()
    a, b = asyncio.run(both())
    elapsed = time.monotonic() - started

    failed_a = [answer for answer in a if answer[1] != 200]
    assert not failed_a, f"{len(failed_a)} of A's {len(a)} calls failed: {failed_a[:5]}"
    assert {kind for kind, _, _ in a} == {"predict", "embed", "chat"}
    wrong_b = []
    for path, body, valid, status, text in b:
        if valid and status == 200:
            continue
        error = orjson.loads(text).get("error", {}) if text.startswith("{") else {}
        if valid or not 400 <= status < 500 or not error.get("type") or not error.get("message"):
            wrong_b.append((path, body[:120], status, text[:200]))
    assert not wrong_b, f"{len(wrong_b)} of B's {len(b)} requests got the wrong answer: {wrong_b[:8]}"

    server: Server = shared["server"]
    with server.http(shared["a"]) as http:
        started_chat = time.monotonic()
        answer = http.post("/v1/chat/completions", json={"model": shared["chat"], "messages": HELLO, "max_tokens": 4})
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started_chat < 5
        assert http.get("/healthz").json() == {"status": "ok"}
    assert elapsed < 60, f"took {elapsed:.0f}s"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/tenants", b'{"name": "t-\\ud800"}'),
        ("PATCH", "/v1/models/spam", b'{"description": "\\udfff"}'),
        ("POST", "/v1/embeddings", b'{"model": "all-minilm-l6-v2", "input": "x", "user": "\\ud800"}'),
        ("POST", "/v1/models/spam/predict", b'{"inputs": ["\\ud800"]}'),
        ("POST", "/v1/tenants", b'{"name": "t", "limits": {"requests_per_minute": NaN}}'),
    ],
)
def test_every_route_refuses_a_body_that_is_not_unicode_json_with_a_400(
    shared: dict[str, Any], method: str, path: str, body: bytes
) -> None:
    server: Server = shared["server"]
    with server.http() as admin:  # the admin key: every route is open to it
        response = admin.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]
    if b"\\u" in body:
        assert "surrogate" in error["message"]
