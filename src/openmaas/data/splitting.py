"""Seeded, stratified train/validation splits."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

MIN_ROWS_FOR_VALIDATION = 20


def stratified_split(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int], str | None]:
    """Indices for (train, validation) and a note when validation was skipped.

    Each class gives about `fraction` of its rows to validation and keeps at least one for training.
    """
    if fraction <= 0:
        return list(range(len(labels))), [], "validation_split is 0: no validation set"
    if len(labels) < MIN_ROWS_FOR_VALIDATION:
        return (
            list(range(len(labels))),
            [],
            f"dataset too small for a validation split ({len(labels)} rows < {MIN_ROWS_FOR_VALIDATION}): "
            "trained on every row, no validation metrics",
        )
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
