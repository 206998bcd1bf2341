"""Text datasets over real HTTP: the three formats, every refusal with a real bad file, and recipes that refuse
a dataset of the other kind."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.api.test_datasets import assert_error, upload
from tests.conftest import Server
from tests.e2e.test_cli import openmaas

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def upload_text(http: httpx.Client, name: str, content: bytes, **form: str) -> httpx.Response:
    return upload(http, name, content, kind="text", **form)


def test_plain_text_is_one_document_per_line(http: httpx.Client) -> None:
    response = upload_text(http, "notes.txt", "first line\n\n  second line  \nfirst line\n天气很好\n".encode())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "text" and body["format"] == "txt" and body["labels"] == {}
    assert body["rows"] == 3
    assert body["report"]["documents"] == {"text": 3, "chat": 0}
    assert body["report"]["dropped"] == {
        "duplicate": {"count": 1, "lines": [4]},
        "empty_text": {"count": 1, "lines": [2]},
    }


def test_jsonl_texts_and_chats_are_stored_canonically(http: httpx.Client) -> None:
    lines = [{"body": "  a longer document\nspanning lines  "}, CHAT, CHAT]
    content = "\n".join(json.dumps(line) for line in lines).encode()
    response = upload_text(http, "mixed.jsonl", content, text_column="body")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rows"] == 2 and body["report"]["documents"] == {"text": 1, "chat": 1}
    assert body["report"]["dropped"]["duplicate"]["lines"] == [3]
    # The same documents, written as canonical rows, hash the same: what is stored is exactly that.
    canonical = b'{"text": "a longer document\\nspanning lines"}\n' + json.dumps(CHAT).encode() + b"\n"
    again = upload_text(http, "canonical.jsonl", canonical).json()
    assert again["sha256"] == body["sha256"]


def test_classification_uploads_are_unchanged_by_default(http: httpx.Client) -> None:
    body = upload(http, "plain.txt", b"text\tlabel\nhello\ta\nbye\tb\n").json()
    assert body["kind"] == "classification" and body["labels"] == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"messages": [{"role": "robot", "content": "x"}]}', "role 'robot'"),
        ('{"messages": [{"role": "user"}]}', "'content' must be a string"),
        ('{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', "list of text parts"),
        ('{"messages": "hello"}', "non-empty list"),
        ('{"text": "x", "messages": []}', "give one"),
        ('{"text": 7}', "must be a string"),
        ("not json", "invalid JSON"),
    ],
)
def test_bad_text_rows_are_refused_with_their_line(http: httpx.Client, line: str, needle: str) -> None:
    content = (json.dumps(CHAT) + "\n" + line + "\n").encode()
    assert_error(upload_text(http, "bad.jsonl", content), 400, "line 2", needle)


def test_a_row_without_text_or_messages_is_refused(http: httpx.Client) -> None:
    error = assert_error(upload_text(http, "x.jsonl", b'{"prompt": "x"}\n'), 422, "line 1", code="missing_column")
    assert error["param"] == "text_column"


def test_text_files_of_other_formats_and_unknown_kinds_are_refused(http: httpx.Client) -> None:
    assert_error(upload_text(http, "x.csv", b"text\nhello\n"), 400, ".txt", code="unsupported_format")
    assert_error(upload(http, "x.txt", b"hello\n", kind="images"), 400, "'images'", code="invalid_kind")
    assert_error(upload_text(http, "x.txt", b"\n  \n"), 422, "no usable documents", code="no_rows")
    assert_error(upload_text(http, "x.txt", "café".encode("latin-1")), 400, "UTF-8", code="invalid_encoding")


def test_recipes_refuse_a_dataset_of_the_other_kind(http: httpx.Client) -> None:
    text = upload_text(http, "kinds.txt", b"some text to learn\n").json()["id"]
    labelled = upload(http, "kinds.csv", b"text,label\ngood,1\nbad,0\n").json()["id"]
    for dataset, recipe, needle in (
        (text, "bow-mlp", "trains on classification datasets"),
        (text, "transformer-classifier", "trains on classification datasets"),
        (labelled, "causal-lm", "trains on text datasets"),
        (labelled, "lora", "trains on text datasets"),
    ):
        response = http.post("/v1/jobs", json={"dataset": dataset, "model": "kind-mismatch", "recipe": recipe})
        error = assert_error(response, 422, needle, code="wrong_dataset_kind")
        assert error["param"] == "dataset"


def test_lora_base_model_must_exist_and_generate_text(http: httpx.Client) -> None:
    text = upload_text(http, "base.txt", b"text for a base model\n").json()["id"]

    def create(base_model: str) -> httpx.Response:
        body = {
            "dataset": text,
            "model": "lora-refused",
            "recipe": "lora",
            "hyperparameters": {"base_model": base_model},
        }
        return http.post("/v1/jobs", json=body)

    error = assert_error(create("no-such-model"), 404, "'no-such-model'", code="model_not_found")
    assert error["param"] == "hyperparameters.base_model"
    error = assert_error(create("all-minilm-l6-v2"), 422, "embeddings model", code="wrong_base_model_task")
    assert error["param"] == "hyperparameters.base_model"
    assert_error(create("bad name!"), 400, "invalid model reference", code="invalid_model_reference")
    unknown = http.post(
        "/v1/jobs",
        json={"dataset": text, "model": "x", "recipe": "lora", "hyperparameters": {"rank": 4}},
    )
    assert_error(unknown, 422, "unknown hyperparameter 'rank'")


def test_cli_uploads_a_text_dataset(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "story.txt"
    path.write_text("once upon a time\nthe end\n", encoding="utf-8")
    printed = openmaas(server, "datasets", "upload", str(path), "--kind", "text")
    assert "2 rows" in printed and "2 texts, 0 chats" in printed
    assert "text" in openmaas(server, "datasets", "list")
