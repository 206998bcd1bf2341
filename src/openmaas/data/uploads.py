"""What every uploaded dataset file shares: format by name, UTF-8 text, JSONL objects and `DatasetFileError`.

`DatasetFileError` names the line of any problem. Used by readers.py (labelled rows) and documents.py
(text datasets), so both refuse a bad file alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from openmaas.lines import split_lines


class DatasetFileError(Exception):
    """The file cannot be read as a dataset. `code` names the problem, `line` where it is."""

    def __init__(self, message: str, *, code: str, line: int | None = None, param: str | None = "file") -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.code = code
        self.line = line
        self.param = param


def format_from_name(filename: str, formats: Mapping[str, str], expected: str) -> str:
    """The format whose suffix ends `filename`; otherwise an error saying what to upload instead (`expected`)."""
    lower = filename.lower()
    for suffix, fmt in formats.items():
        if lower.endswith(suffix):
            return fmt
    raise DatasetFileError(f"unknown format for {filename!r}: {expected}", code="unsupported_format")


def decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DatasetFileError(
            f"the file is not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8 and upload again",
            code="invalid_encoding",
            line=line,
        ) from None


def read_json_objects(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a line that is not a JSON object is an error."""
    for number, raw in enumerate(split_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DatasetFileError(f"invalid JSON: {error.msg}", code="malformed_file", line=number) from None
        if not isinstance(record, dict):
            raise DatasetFileError("each line must be a JSON object", code="malformed_file", line=number)
        yield number, record
