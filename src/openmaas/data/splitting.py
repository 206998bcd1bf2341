"""Seeded train/validation splits: stratified by label for classification, random for text documents."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

MIN_ROWS_FOR_VALIDATION = 20


def _too_small(count: int, fraction: float) -> str | None:
    if fraction <= 0:
        return "validation_split is 0: no validation set"
    if count < MIN_ROWS_FOR_VALIDATION:
        return (
            f"dataset too small for a validation split ({count} rows < {MIN_ROWS_FOR_VALIDATION}): "
            "trained on every row, no validation metrics"
        )
    return None


def stratified_split(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int], str | None]:
    """Indices for (train, validation) and a note when validation was skipped.

    Each class gives about `fraction` of its rows to validation and keeps at least one for training.
    """
    if (note := _too_small(len(labels), fraction)) is not None:
        return list(range(len(labels))), [], note
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    train: list[int] = []
    validation: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        take = min(round(len(indices) * fraction), len(indices) - 1)
        validation.extend(indices[:take])
        train.extend(indices[take:])
    return sorted(train), sorted(validation), None


def random_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int], str | None]:
    """Indices for (train, validation) of unlabelled rows: about `fraction` of them, drawn at random."""
    if (note := _too_small(count, fraction)) is not None:
        return list(range(count)), [], note
    indices = list(range(count))
    random.Random(seed).shuffle(indices)
    take = min(max(round(count * fraction), 1), count - 1)
    return sorted(indices[take:]), sorted(indices[:take]), None
