"""Cleans parsed rows: strips text, drops empty and duplicate rows, normalises labels, reports what it did.

`clean` is for labelled rows (classification), `clean_documents` for the documents of a text dataset.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from openmaas.data.documents import RawDocument
from openmaas.data.readers import DatasetFileError, RawRow

EXAMPLES_PER_REASON = 5


@dataclass
class CleanDataset:
    texts: list[str]
    labels: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


def normalise_label(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    label = str(value).strip()
    return label or None


def clean(rows: Iterable[RawRow]) -> CleanDataset:
    seen: set[tuple[str, str]] = set()
    label_of_text: dict[str, str] = {}
    conflicts: set[str] = set()
    dropped: Counter[str] = Counter()
    examples: dict[str, list[int]] = {}
    texts: list[str] = []
    labels: list[str] = []
    total = 0

    def drop(reason: str, line: int) -> None:
        dropped[reason] += 1
        lines = examples.setdefault(reason, [])
        if len(lines) < EXAMPLES_PER_REASON:
            lines.append(line)

    for row in rows:
        total += 1
        if row.text is not None and not isinstance(row.text, str):
            raise DatasetFileError(
                f"text must be a string, found {type(row.text).__name__}", code="invalid_text", line=row.line
            )
        text = (row.text or "").strip()
        label = normalise_label(row.label)
        if not text:
            drop("empty_text", row.line)
            continue
        if label is None:
            drop("missing_label", row.line)
            continue
        if (text, label) in seen:
            drop("duplicate", row.line)
            continue
        seen.add((text, label))
        if label_of_text.setdefault(text, label) != label:
            conflicts.add(text)
        texts.append(text)
        labels.append(label)

    if not texts:
        raise DatasetFileError(
            f"no usable rows: {total} read, all dropped ({dict(dropped) or 'the file has only a header'})",
            code="no_rows",
            param="file",
        )
    result = CleanDataset(texts, labels)
    counts = result.label_counts
    if len(counts) < 2:
        raise DatasetFileError(
            f"a classifier needs at least 2 classes; every row is labeled {next(iter(counts))!r}",
            code="too_few_classes",
            param="label_column",
        )
    result.report = {
        "input_rows": total,
        "rows": len(texts),
        "dropped": {reason: {"count": n, "lines": examples[reason]} for reason, n in sorted(dropped.items())},
        "conflicting_labels": len(conflicts),
    }
    return result


@dataclass
class CleanDocuments:
    """Canonical rows of a text dataset: `{"text": ...}` or `{"messages": [{"role", "content"}, ...]}`."""

    rows: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)


def clean_documents(documents: Iterable[RawDocument]) -> CleanDocuments:
    """Strip plain texts, drop empty documents (a chat is empty when every message is blank) and duplicates."""
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    examples: dict[str, list[int]] = {}
    rows: list[dict[str, Any]] = []
    chats = total = 0

    def drop(reason: str, line: int) -> None:
        dropped[reason] += 1
        lines = examples.setdefault(reason, [])
        if len(lines) < EXAMPLES_PER_REASON:
            lines.append(line)

    for document in documents:
        total += 1
        row: dict[str, Any]
        if document.messages is not None:
            row = {"messages": document.messages}
            empty = not any(message["content"].strip() for message in document.messages)
        else:
            row = {"text": (document.text or "").strip()}
            empty = not row["text"]
        if empty:
            drop("empty_text", document.line)
            continue
        key = json.dumps(row, ensure_ascii=False, sort_keys=True)
        if key in seen:
            drop("duplicate", document.line)
            continue
        seen.add(key)
        rows.append(row)
        chats += "messages" in row

    if not rows:
        raise DatasetFileError(
            f"no usable documents: {total} read, all dropped ({dict(dropped) or 'the file is empty'})",
            code="no_rows",
            param="file",
        )
    report = {
        "input_rows": total,
        "rows": len(rows),
        "documents": {"text": len(rows) - chats, "chat": chats},
        "dropped": {reason: {"count": n, "lines": examples[reason]} for reason, n in sorted(dropped.items())},
    }
    return CleanDocuments(rows, report)
