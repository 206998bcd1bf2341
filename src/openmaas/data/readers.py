"""Parses uploaded CSV, TSV and JSONL files into (line, text, label) rows, naming the line of any problem."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from openmaas.data.uploads import DatasetFileError, decode_utf8, format_from_name, read_json_objects

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "tsv"}


@dataclass(frozen=True)
class RawRow:
    line: int
    text: Any
    label: Any


def detect_format(filename: str) -> str:
    return format_from_name(filename, FORMATS, "upload a .csv, .tsv or .jsonl file")


def read_rows(data: bytes, fmt: str, text_column: str, label_column: str) -> Iterator[RawRow]:
    text = decode_utf8(data)
    if fmt == "jsonl":
        yield from _read_jsonl(text, text_column, label_column)
    else:
        yield from _read_delimited(text, "\t" if fmt == "tsv" else ",", text_column, label_column)


def _missing_column(column: str, param: str, available: list[str]) -> DatasetFileError:
    return DatasetFileError(
        f"column {column!r} not found; the file has {', '.join(map(repr, available)) or 'no columns'} "
        f"(choose another with {param}, the CLI's --{param.replace('_', '-')})",
        code="missing_column",
        param=param,
    )


def _read_delimited(text: str, delimiter: str, text_column: str, label_column: str) -> Iterator[RawRow]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise DatasetFileError(f"malformed header: {error}", code="malformed_file", line=1) from None
    if not header or not any(cell.strip() for cell in header):
        raise DatasetFileError("the file is empty: expected a header line", code="empty_file")
    columns = [cell.strip() for cell in header]
    for column, param in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in columns:
            raise _missing_column(column, param, columns)
    text_at, label_at = columns.index(text_column), columns.index(label_column)
    line = reader.line_num
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not cells:
                continue
            if len(cells) != len(columns):
                raise DatasetFileError(
                    f"expected {len(columns)} fields, found {len(cells)} (check the quoting)",
                    code="malformed_file",
                    line=start,
                )
            yield RawRow(start, cells[text_at], cells[label_at])
    except csv.Error as error:
        raise DatasetFileError(f"malformed row: {error}", code="malformed_file", line=line + 1) from None


def _read_jsonl(text: str, text_column: str, label_column: str) -> Iterator[RawRow]:
    for number, record in read_json_objects(text):
        for column, param in ((text_column, "text_column"), (label_column, "label_column")):
            if column not in record:
                raise DatasetFileError(
                    f"missing key {column!r} (choose another with {param}, the CLI's --{param.replace('_', '-')})",
                    code="missing_column",
                    line=number,
                    param=param,
                )
        yield RawRow(number, record[text_column], record[label_column])
