"""The pre-flight data report of a fine-tune, computed while it is `validating_files`: rows, tokens per example
(by the recipe's own tokenizer), label balance, exact and near duplicates, conflicting labels, examples cut at
the context, the tokens to train on, and how long that takes at this machine's measured speed for the recipe.

The speed is measured, never assumed: it is the trained tokens over the training seconds of the newest
succeeded fine-tunes of the same recipe (their reports and their jobs' metrics are in the database), plus their
median overhead (start to finish, less training: loading, export, registration). Until one has finished there
is no estimate, and the report says so.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from openmaas.domain.entities import Dataset
from openmaas.recipes.token_counts import TokenCounter

TRUNCATED_LINES_SHOWN = 20  # the report names the first examples cut at the context, not all of them


def _text_of(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "\n".join(str(message.get("content", "")) for message in row["messages"])
    return str(row.get("text", ""))


def _near_key(text: str) -> str:
    """Texts that differ only in case, spacing or punctuation are near duplicates."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def data_report(
    rows: list[dict[str, Any]],
    dropped: dict[str, Any],
    counter: TokenCounter,
    epochs: int,
    validation_rows: int | None = None,
    train_fraction: float = 1.0,
) -> dict[str, Any]:
    """What a job will train on. Exact duplicates were dropped when the file was read (`dropped`); the example
    numbers of `truncated_examples` are 1-based positions among the rows kept. `train_fraction` is the share of
    the rows that trains (the rest is held out for validation when no validation file was given)."""
    texts = [_text_of(row) for row in rows]
    tokens = [counter.count(row) for row in rows]
    ordered = sorted(tokens)
    near: dict[str, set[str]] = {}
    for text, row in zip(texts, rows, strict=True):
        near.setdefault(_near_key(text), set()).add(str(row.get("label")))
    context = counter.context
    over = [index for index, count in enumerate(tokens, 1) if context is not None and count > context]
    # A truncated example trains on its first `context` tokens; a windowed one on all of them.
    seen = sum(min(count, context) if context is not None and counter.cut == "truncated" else count for count in tokens)
    report: dict[str, Any] = {
        "rows": len(rows),
        "tokenizer": counter.tokenizer,
        "tokens_per_example": (
            {"min": ordered[0], "median": statistics.median(ordered), "max": ordered[-1]} if ordered else None
        ),
        "exact_duplicates_dropped": dropped.get("duplicate", {}).get("count", 0),
        "near_duplicates": len(rows) - len(near),
        "context": context,
        "over_context": len(over),
        "over_context_handling": counter.cut,
        "truncated_examples": over[:TRUNCATED_LINES_SHOWN],
        "tokens_in_file": seen,
        "tokens_per_epoch": round(seen * train_fraction),
        "n_epochs": epochs,
        "estimated_trained_tokens": round(seen * train_fraction) * epochs,
    }
    if any("label" in row for row in rows):
        report["label_balance"] = dict(Counter(str(row["label"]) for row in rows).most_common())
        report["conflicting_labels"] = sum(len(labels) > 1 for labels in near.values())
    if validation_rows is not None:
        report["validation_rows"] = validation_rows
    return report


def image_data_report(
    dataset: Dataset, epochs: int, train_fraction: float = 1.0, validation_rows: int | None = None
) -> dict[str, Any]:
    """What an image job will train on, from the dataset's own report: images, label balance, sizes and the
    duplicates dropped. An image counts as one unit where a text job counts tokens (`unit`), so the estimate,
    `trained_tokens` and the measured speed of image recipes are in images."""
    report = dataset.report
    per_epoch = round(dataset.rows * train_fraction)
    found: dict[str, Any] = {
        "rows": dataset.rows,
        "unit": "images",
        "label_balance": dict(sorted(dataset.labels.items(), key=lambda item: -item[1])),
        "width": report.get("width"),
        "height": report.get("height"),
        "exact_duplicates_dropped": report.get("dropped", {}).get("duplicate", {}).get("count", 0),
        "tokens_in_file": dataset.rows,
        "tokens_per_epoch": per_epoch,
        "n_epochs": epochs,
        "estimated_trained_tokens": per_epoch * epochs,
    }
    if validation_rows is not None:
        found["validation_rows"] = validation_rows
    return found


def trained_tokens(report: dict[str, Any] | None, metrics: dict[str, Any]) -> int | None:
    """The tokens a finished job trained on: its training rows' share of the file's tokens, times the epochs it
    ran."""
    if not report or "tokens_in_file" not in report or not metrics.get("epochs"):
        return None
    share = metrics.get("train_rows", report["rows"]) / max(report["rows"], 1)
    return round(int(report["tokens_in_file"]) * min(share, 1.0)) * int(metrics["epochs"])


def measured_speed(finished: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Tokens per training second and the median overhead, from finished fine-tunes (report, metrics,
    started_at, finished_at each); None when none of them measured anything."""
    tokens, seconds, overheads = 0, 0.0, []
    for job in finished:
        done = trained_tokens(job["report"], job["metrics"] or {})
        train_s = (job["metrics"] or {}).get("train_seconds")
        if done is None or not train_s or train_s <= 0:
            continue
        tokens += done
        seconds += float(train_s)
        if job["started_at"] is not None and job["finished_at"] is not None:
            overheads.append(max(0.0, job["finished_at"] - job["started_at"] - float(train_s)))
    if seconds <= 0 or tokens <= 0:
        return None
    return {
        "tokens_per_second": round(tokens / seconds, 1),
        "overhead_seconds": round(statistics.median(overheads), 2) if overheads else 0.0,
        "from_jobs": len(overheads) or 1,
    }


def estimate(report: dict[str, Any], speed: dict[str, Any] | None) -> dict[str, Any]:
    """The report's speed and estimated duration (seconds), or why there is none."""
    if speed is None:
        return {
            **report,
            "speed": None,
            "estimated_seconds": None,
            "estimate_note": "no finished fine-tune of this recipe on this server yet to measure its speed",
        }
    seconds = speed["overhead_seconds"] + report["estimated_trained_tokens"] / speed["tokens_per_second"]
    return {**report, "speed": speed, "estimated_seconds": round(seconds, 1)}
