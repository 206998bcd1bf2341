"""Cleans parsed rows: strips text, drops empty and duplicate rows, normalises labels, reports what it did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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
