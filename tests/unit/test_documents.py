"""Text datasets: parsing plain text, JSONL texts and chats, cleaning, and the random split."""

from __future__ import annotations

import pytest

from openmaas.data.cleaning import clean_documents
from openmaas.data.documents import read_documents
from openmaas.data.readers import DatasetFileError, read_rows
from openmaas.data.splitting import random_split


def test_each_non_empty_txt_line_is_one_document() -> None:
    cleaned = clean_documents(read_documents(b"first line\n\n  second  \nfirst line\n", "txt"))
    assert cleaned.rows == [{"text": "first line"}, {"text": "second"}]
    assert cleaned.report["dropped"] == {
        "duplicate": {"count": 1, "lines": [4]},
        "empty_text": {"count": 1, "lines": [2]},
    }


def test_jsonl_mixes_texts_and_chats_and_joins_text_parts() -> None:
    content = (
        b'{"text": "a document"}\n'
        b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi "}, '
        b'{"type": "text", "text": "there"}]}, {"role": "assistant", "content": "hello", "name": "bot"}]}\n'
    )
    cleaned = clean_documents(read_documents(content, "jsonl"))
    assert cleaned.rows[1] == {
        "messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]
    }
    assert cleaned.report["documents"] == {"text": 1, "chat": 1}


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "role 'bot'"),
        ('{"messages": [{"role": "user", "content": null}]}', "'content' must be a string"),
        ('{"messages": ["hello"]}', "message 1 must be an object"),
    ],
)
def test_bad_chats_are_refused_with_their_line(line: str, needle: str) -> None:
    content = ('{"text": "fine"}\n' + line + "\n").encode()
    with pytest.raises(DatasetFileError) as caught:
        list(read_documents(content, "jsonl"))
    assert caught.value.code == "invalid_chat" and caught.value.line == 2
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "line 2: invalid JSON: Expecting property name enclosed in double quotes"),
        ("[1, 2]", "line 2: each line must be a JSON object"),
    ],
)
def test_text_and_labelled_jsonl_refuse_a_bad_line_alike(line: str, message: str) -> None:
    data = f'{{"text": "fine", "label": "a"}}\n{line}\n'.encode()
    for read in (lambda: list(read_documents(data, "jsonl")), lambda: list(read_rows(data, "jsonl", "text", "label"))):
        with pytest.raises(DatasetFileError) as caught:
            read()
        assert (str(caught.value), caught.value.code, caught.value.line) == (message, "malformed_file", 2)


def test_a_chat_of_blank_messages_is_dropped_as_empty() -> None:
    content = b'{"messages": [{"role": "user", "content": " "}]}\n{"text": "kept"}\n'
    cleaned = clean_documents(read_documents(content, "jsonl"))
    assert cleaned.rows == [{"text": "kept"}]
    assert cleaned.report["dropped"]["empty_text"]["lines"] == [1]


def test_random_split_is_seeded_and_keeps_training_rows() -> None:
    train, validation, note = random_split(100, 0.1, seed=3)
    assert note is None and len(validation) == 10 and sorted(train + validation) == list(range(100))
    assert random_split(100, 0.1, seed=3) == (train, validation, None)
    assert random_split(5, 0.1, seed=3)[2] is not None
