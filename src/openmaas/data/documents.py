"""Parses uploaded text datasets for language models into documents, naming the line of any problem.

Accepted files:
- `.txt`: every non-empty line is one document (a document spanning several lines goes in JSONL instead);
- `.jsonl`: one object a line, either `{"text": "..."}` (another key with `text_column`) or a chat,
  `{"messages": [{"role": "user", "content": "..."}, ...]}`; both kinds may be mixed in one file.

A chat message's `content` is a string or a list of OpenAI text parts (`{"type": "text", "text": ...}`),
which are joined into one string; other keys of a message (`name`, ...) are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from openmaas.data.uploads import DatasetFileError, decode_utf8, format_from_name, read_json_objects
from openmaas.lines import split_lines

TEXT_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TEXT_FORMATS_JSONL = (".jsonl", ".ndjson")
# The roles recipes/chat.py renders (data/ sits below recipes/, so it cannot import them from there).
CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class RawDocument:
    """One parsed row: `text` for a plain document, `messages` ([{role, content}] validated) for a chat."""

    line: int
    text: str | None = None
    messages: list[dict[str, str]] | None = None


def detect_text_format(filename: str) -> str:
    return format_from_name(
        filename,
        TEXT_FORMATS,
        "a text dataset is a .txt file (one document per line) or a .jsonl file "
        '({"text": ...} or {"messages": [...]} on each line)',
    )


def looks_like_text_dataset(filename: str, data: bytes, label_column: str) -> bool:
    """Whether a file that failed as labelled texts is rather a text dataset: a `.txt` file (one document a
    line), or JSONL whose first object is a chat or has no label."""
    lower = filename.lower()
    if lower.endswith(".txt"):
        return True
    if not lower.endswith(TEXT_FORMATS_JSONL):
        return False
    for line in data[:1_000_000].decode("utf-8-sig", errors="replace").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                return False
            return isinstance(record, dict) and ("messages" in record or label_column not in record)
    return False


def read_documents(data: bytes, fmt: str, text_column: str = "text") -> Iterator[RawDocument]:
    text = decode_utf8(data)
    if fmt == "txt":
        for number, line in enumerate(split_lines(text), start=1):
            yield RawDocument(number, text=line)
        return
    for number, record in read_json_objects(text):
        yield _document(record, number, text_column)


def _document(record: dict[str, Any], line: int, text_column: str) -> RawDocument:
    has_text, has_messages = text_column in record, "messages" in record
    if has_text and has_messages:
        raise DatasetFileError(
            f"the object has both {text_column!r} and 'messages': give one", code="malformed_file", line=line
        )
    if has_messages:
        return RawDocument(line, messages=_messages(record["messages"], line))
    if not has_text:
        raise DatasetFileError(
            f"missing key {text_column!r} or 'messages' (choose the text key with text_column, the CLI's "
            "--text-column)",
            code="missing_column",
            line=line,
            param="text_column",
        )
    value = record[text_column]
    if value is not None and not isinstance(value, str):
        raise DatasetFileError(
            f"{text_column!r} must be a string, found {type(value).__name__}", code="invalid_text", line=line
        )
    return RawDocument(line, text=value)


def _chat_error(message: str, line: int) -> DatasetFileError:
    return DatasetFileError(message, code="invalid_chat", line=line)


def _messages(value: Any, line: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _chat_error('\'messages\' must be a non-empty list of {"role", "content"} objects', line)
    messages = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            raise _chat_error(f"message {number} must be an object with 'role' and 'content'", line)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise _chat_error(
                f"message {number} has role {role!r}; use one of {', '.join(CHAT_ROLES)}",
                line,
            )
        messages.append({"role": role, "content": _content(message.get("content"), number, line)})
    return messages


def _content(value: Any, number: int, line: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in value
    ):
        return "".join(part["text"] for part in value)
    raise _chat_error(
        f"message {number}: 'content' must be a string or a list of text parts "
        f'({{"type": "text", "text": ...}}), found {type(value).__name__}',
        line,
    )
