"""Errors a newcomer meets in the first hour, over real HTTP: each one says what went wrong and what to do
instead (the routes that serve a model, the name meant, how to upload a text dataset, why an import is refused,
a long text's real length, a request too large for what is left of a token budget)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from openmaas import APIError, Client
from tests.api.test_datasets import assert_error, upload
from tests.conftest import ADMIN_KEY, REDIS, Server, redis_reachable
from tests.tiny_llm import build_tiny_causal_lm

ENCODER = "all-minilm-l6-v2"
CHAT_MODEL = "helpful-chat"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def chat_model(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("helpful-llm") / "model")
    with server.http() as http:
        answer = http.post("/v1/models/import", json={"path": str(directory), "name": CHAT_MODEL})
    assert answer.status_code == 201, answer.text
    return CHAT_MODEL


def test_a_chat_model_on_predict_or_embeddings_names_the_chat_routes(http: httpx.Client, chat_model: str) -> None:
    predicted = http.post(f"/v1/models/{chat_model}/predict", json={"inputs": ["hello"]})
    embedded = http.post("/v1/embeddings", json={"model": chat_model, "input": "hello"})
    for answer, route in ((predicted, f"POST /v1/models/{chat_model}/predict"), (embedded, "POST /v1/embeddings")):
        error = assert_error(answer, 400, "POST /v1/chat/completions", "POST /v1/completions", code="wrong_task")
        assert error["param"] == "model"
        assert f"is a text-generation (chat) model, which {route} does not serve" in error["message"]


def cli_error(server: Server, *args: str) -> str:
    """What `openmaas ARGS` prints on stderr when it fails (whitespace folded: rich wraps long lines)."""
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "openmaas", *args], env=env, capture_output=True, text=True)
    assert done.returncode != 0, done.stdout
    return " ".join(done.stderr.split())


def test_the_cli_predicting_with_a_chat_model_points_to_chat(server: Server, chat_model: str) -> None:
    printed = cli_error(server, "predict", chat_model, "hello")
    assert "POST /v1/chat/completions or POST /v1/completions" in printed and "/v1/embeddings" not in printed


def test_an_embeddings_model_on_predict_or_chat_names_the_embeddings_route(http: httpx.Client) -> None:
    predicted = http.post(f"/v1/models/{ENCODER}/predict", json={"inputs": ["hello"]})
    error = assert_error(predicted, 400, "is an embeddings model", "call it with POST /v1/embeddings")
    assert "/predict" not in error["message"].partition("call it with")[2]
    chatted = http.post("/v1/chat/completions", json={"model": ENCODER, "messages": HELLO})
    assert_error(chatted, 400, "an embeddings model, which POST /v1/chat/completions does not serve", code="wrong_task")


def test_a_misspelt_model_gets_a_did_you_mean(http: httpx.Client) -> None:
    embedded = http.post("/v1/embeddings", json={"model": "all-minilm", "input": "hello"})
    assert_error(embedded, 404, "did you mean 'all-minilm-l6-v2'?", code="model_not_found")
    shown = http.get("/v1/models/all-minilm-l6v2")
    assert_error(shown, 404, "did you mean 'all-minilm-l6-v2'?")
    nothing_close = http.post("/v1/embeddings", json={"model": "zzzz", "input": "hello"})
    assert "did you mean" not in assert_error(nothing_close, 404)["message"]


def test_another_tenants_public_model_is_suggested_by_its_full_name(
    server: Server, http: httpx.Client, chat_model: str
) -> None:
    tenant = http.post("/v1/tenants", json={"name": "helpful-guest"}).json()
    key = http.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["infer", "read"]}).json()["key"]
    with server.http(key) as guest:
        hidden = guest.post("/v1/completions", json={"model": chat_model, "prompt": "hi"})
        assert "did you mean" not in assert_error(hidden, 404)["message"]  # private: nothing to suggest
        assert http.patch(f"/v1/models/{chat_model}", json={"public": True}).status_code == 200
        try:
            shared = guest.post("/v1/completions", json={"model": chat_model, "prompt": "hi"})
            assert_error(shared, 404, f"did you mean 'default/{chat_model}'?", code="model_not_found")
        finally:
            http.patch(f"/v1/models/{chat_model}", json={"public": False})


def test_a_hub_id_or_a_relative_path_is_refused_with_the_reason(
    server: Server, client: Client, http: httpx.Client
) -> None:
    printed = cli_error(server, "models", "import", "HuggingFaceTB/SmolLM2-135M-Instruct", "--name", "smol")
    assert "looks like a Hugging Face Hub id" in printed and "pass its absolute path" in printed
    with pytest.raises(APIError) as hub:
        client.import_model("HuggingFaceTB/SmolLM2-135M-Instruct", "smol")
    assert hub.value.status == 422 and hub.value.code == "hub_id_not_fetched"
    assert "does not download models" in str(hub.value) and "absolute path" in str(hub.value)
    relative = http.post("/v1/models/import", json={"path": "my-encoder", "name": "mine"})
    assert_error(relative, 422, "relative path", "absolute path", code="relative_path")
    dotted = http.post("/v1/models/import", json={"path": "./models/my-encoder", "name": "mine"})
    assert_error(dotted, 422, "not resolved against the server's working directory", code="relative_path")


def test_truncate_false_reports_the_real_length(http: httpx.Client) -> None:
    long_text = "word " * 600  # 600 words and two special tokens: far past MiniLM's 256
    answer = http.post("/v1/embeddings", json={"model": ENCODER, "input": ["short", long_text], "truncate": False})
    error = assert_error(answer, 400, "input[1] has 602 tokens, over the limit of 256", code="input_too_long")
    assert error["param"] == "input.1"


TEXT_HINT = ("looks like a text dataset", "-F kind=text", "--kind text")


def test_text_files_uploaded_as_classification_say_how_to_upload_them(http: httpx.Client) -> None:
    notes = b"Meeting note 0: the launch moved to May\nMeeting note 1: budget approved\n"
    assert_error(upload(http, "notes.txt", notes), 422, *TEXT_HINT, code="missing_column")
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    assert_error(upload(http, "chats.jsonl", json.dumps(chat).encode()), 422, *TEXT_HINT)
    plain = json.dumps({"text": "a document without a label"}).encode()
    assert_error(upload(http, "docs.jsonl", plain), 422, *TEXT_HINT)
    # A labelled file with a wrongly named column is not a text dataset: the hint names the CLI's option.
    labelled = assert_error(upload(http, "spam.csv", b"body,label\nhello,a\n"), 422, "--text-column")
    assert "kind" not in labelled["message"]
    missing_key = upload(http, "spam.jsonl", json.dumps({"body": "x", "label": "a"}).encode())
    assert "looks like" not in assert_error(missing_key, 422, "text_column, the CLI's --text-column")["message"]
    documents = upload(http, "docs.jsonl", json.dumps({"body": "x"}).encode(), kind="text")
    assert_error(documents, 422, "the CLI's --text-column")


def _fresh_window(window: float = 60.0) -> None:
    if window - time.time() % window < min(60, window / 6):
        time.sleep(window - time.time() % window + 0.05)


@pytest.fixture(params=["local", "redis"])
def limited_server(request: pytest.FixtureRequest, server: Server, start_server: type[Server]) -> Iterator[Server]:
    if request.param == "local":
        yield server
        return
    if not redis_reachable():
        pytest.skip(f"no Redis at {REDIS}")
    yield start_server(OPENMAAS_REDIS_URL=REDIS)


def test_a_request_over_what_is_left_of_the_token_budget_is_refused_before_it_runs(limited_server: Server) -> None:
    with limited_server.http() as admin:
        tenant = admin.post("/v1/tenants", json={"name": f"budget-{time.time_ns()}"}).json()
        key = admin.post(
            f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["infer", "read"], "limits": {"tokens_per_minute": 10}}
        ).json()["key"]
    twelve = "one two three four five six seven eight nine ten"  # 10 words + 2 special tokens
    with limited_server.http(key) as limited:
        _fresh_window()
        too_large = limited.post("/v1/embeddings", json={"model": ENCODER, "input": twelve})
        error = assert_error(too_large, 429, "needs 12 tokens, more than the limit of 10", code="rate_limit_tokens")
        assert error["type"] == "rate_limit_error"
        ok = limited.post("/v1/embeddings", json={"model": ENCODER, "input": "one two three four five six"})
        assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 8  # the refusal counted nothing
        assert ok.headers["x-ratelimit-remaining-tokens"] == "2"
        over = limited.post("/v1/embeddings", json={"model": ENCODER, "input": "seven eight"})  # 4 tokens
        assert_error(over, 429, "needs 4 tokens and 2 of the 10 per minute are left")
        assert int(over.headers["retry-after"]) >= 1
        three = limited.post("/v1/embeddings", json={"model": ENCODER, "input": "a"})
        assert_error(three, 429, "needs 3 tokens and 2 of the 10")
        usage = limited.get("/v1/usage").json()
    assert sum(row["tokens"] for row in usage["data"] if row["kind"] == "inference") == 8  # only the call that ran


def test_a_generation_refused_for_a_full_queue_gives_its_prompt_tokens_back(
    start_server: type[Server], tmp_path_factory: pytest.TempPathFactory
) -> None:
    window = 600
    one = {"OPENMAAS_MAX_QUEUED_GENERATIONS": "1", "OPENMAAS_GENERATION_BATCH_SIZE": "1"}
    server = start_server(**one, OPENMAAS_RATE_LIMIT_WINDOW_S=str(window))
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("refund-llm") / "model")
    with server.http() as admin:
        assert admin.post("/v1/models/import", json={"path": str(directory), "name": "chat"}).status_code == 201
        limits = {"tokens_per_minute": 100000}  # a key of the model's own tenant, with a budget
        key = admin.post("/v1/tenants/default/keys", json={"scopes": ["infer"], "limits": limits}).json()["key"]
    long = {"model": "chat", "messages": HELLO, "max_tokens": 460, "temperature": 0}

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
            warm = await client.post("/v1/chat/completions", json={**long, "max_tokens": 1})  # loaded first
            burst = await asyncio.gather(*(client.post("/v1/chat/completions", json=long) for _ in range(6)))
            return [warm, *burst]

    _fresh_window(window)
    answers = asyncio.run(burst())
    assert any(a.status_code == 429 and a.json()["error"]["code"] == "queue_full" for a in answers), answers
    with server.http(key) as limited:
        last = limited.post("/v1/chat/completions", json={**long, "max_tokens": 1})
    served = [a.json()["usage"] for a in answers if a.status_code == 200]
    spent = sum(u["total_tokens"] for u in served) + last.json()["usage"]["prompt_tokens"]
    # Only the answered calls count: the refused ones gave their prompt tokens back.
    assert int(last.headers["x-ratelimit-remaining-tokens"]) == 100000 - spent
