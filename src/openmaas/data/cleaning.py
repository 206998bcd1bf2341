"""Cleans parsed rows: strips text, drops empty and duplicate rows, normalises labels, reports what it did.

`clean` is for labelled rows (classification), `clean_documents` for the documents of a text dataset;
both run one pass, `_sift`, which keeps the first of equal rows and counts the others by reason.

Unicode line and paragraph separators (U+2028, U+2029, NEL U+0085, VT, FF, U+001C-U+001E) are whitespace
here: stripped from a text's ends like any other (a text made only of them is empty and dropped), and kept
as they are inside it, so a model trains on the characters it will be asked to predict on. They never end a
row: files are cut into lines at `\n`, `\r\n` and `\r` only (openmaas/lines.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from openmaas.data.documents import RawDocument
from openmaas.data.readers import RawRow
from openmaas.data.uploads import DatasetFileError

EXAMPLES_PER_REASON = 5


class _Numbered(Protocol):
    @property
    def line(self) -> int: ...


_Item = TypeVar("_Item", bound=_Numbered)
_Kept = TypeVar("_Kept")


@dataclass
class _Sifted(Generic[_Kept]):
    """What one pass kept, how many items it read, and why it dropped the others (with their first lines)."""

    kept: list[_Kept] = field(default_factory=list)
    total: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def drop(self, reason: str, line: int) -> None:
        self.dropped[reason] += 1
        lines = self.examples.setdefault(reason, [])
        if len(lines) < EXAMPLES_PER_REASON:
            lines.append(line)

    def require_kept(self, noun: str, when_none_read: str) -> None:
        if not self.kept:
            raise DatasetFileError(
                f"no usable {noun}: {self.total} read, all dropped ({dict(self.dropped) or when_none_read})",
                code="no_rows",
                param="file",
            )

    def dropped_report(self) -> dict[str, dict[str, Any]]:
        return {reason: {"count": n, "lines": self.examples[reason]} for reason, n in sorted(self.dropped.items())}


def _sift(items: Iterable[_Item], examine: Callable[[_Item], tuple[_Kept, Hashable] | str]) -> _Sifted[_Kept]:
    """`examine` gives an item's cleaned form and what makes it equal to another, or the reason to drop it."""
    sifted: _Sifted[_Kept] = _Sifted()
    seen: set[Hashable] = set()
    for item in items:
        sifted.total += 1
        verdict = examine(item)
        if isinstance(verdict, str):
            sifted.drop(verdict, item.line)
            continue
        kept, identity = verdict
        if identity in seen:
            sifted.drop("duplicate", item.line)
            continue
        seen.add(identity)
        sifted.kept.append(kept)
    return sifted


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


def _labelled(row: RawRow) -> tuple[tuple[str, str], Hashable] | str:
    if row.text is not None and not isinstance(row.text, str):
        raise DatasetFileError(
            f"text must be a string, found {type(row.text).__name__}", code="invalid_text", line=row.line
        )
    text = (row.text or "").strip()
    label = normalise_label(row.label)
    if not text:
        return "empty_text"
    if label is None:
        return "missing_label"
    return (text, label), (text, label)


def clean(rows: Iterable[RawRow]) -> CleanDataset:
    sifted = _sift(rows, _labelled)
    sifted.require_kept("rows", "the file has only a header")
    result = CleanDataset([text for text, _ in sifted.kept], [label for _, label in sifted.kept])
    counts = result.label_counts
    if len(counts) < 2:
        raise DatasetFileError(
            f"a classifier needs at least 2 classes; every row is labeled {next(iter(counts))!r}",
            code="too_few_classes",
            param="label_column",
        )
    # Kept pairs are distinct, so a text kept twice carries two labels.
    conflicts = sum(n > 1 for n in Counter(result.texts).values())
    result.report = {
        "input_rows": sifted.total,
        "rows": len(result.texts),
        "dropped": sifted.dropped_report(),
        "conflicting_labels": conflicts,
    }
    return result


@dataclass
class CleanDocuments:
    """Canonical rows of a text dataset: `{"text": ...}` or `{"messages": [{"role", "content"}, ...]}`."""

    rows: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)


def _canonical(document: RawDocument) -> tuple[dict[str, Any], Hashable] | str:
    row: dict[str, Any]
    if document.messages is not None:
        row = {"messages": document.messages}
        empty = not any(message["content"].strip() for message in document.messages)
    else:
        row = {"text": (document.text or "").strip()}
        empty = not row["text"]
    if empty:
        return "empty_text"
    return row, json.dumps(row, ensure_ascii=False, sort_keys=True)


def clean_documents(documents: Iterable[RawDocument]) -> CleanDocuments:
    """Strip plain texts, drop empty documents (a chat is empty when every message is blank) and duplicates."""
    sifted = _sift(documents, _canonical)
    sifted.require_kept("documents", "the file is empty")
    chats = sum("messages" in row for row in sifted.kept)
    report = {
        "input_rows": sifted.total,
        "rows": len(sifted.kept),
        "documents": {"text": len(sifted.kept) - chats, "chat": chats},
        "dropped": sifted.dropped_report(),
    }
    return CleanDocuments(sifted.kept, report)
