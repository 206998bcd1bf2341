"""Predictors: a loaded model version behind one call, `predict(texts)`, that takes a whole batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from openmaas.domain.entities import ModelVersion
from openmaas.recipes import get_recipe
from openmaas.recipes.base import InferenceModel, resolve_device


class Predictor(Protocol):
    version: ModelVersion
    memory_bytes: int

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]: ...


class ClassifierPredictor:
    """Class probabilities → {"label", "score", "scores"} per text, in the version's label order."""

    def __init__(self, version: ModelVersion, model: InferenceModel) -> None:
        self.version = version
        self.model = model
        self.labels = list(model.labels)
        self.memory_bytes = model.memory_bytes

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        probabilities = self.model.predict_proba(texts).tolist()
        labels = self.labels
        out = []
        for row in probabilities:
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": labels[best], "score": row[best], "scores": dict(zip(labels, row, strict=True))})
        return out


def load_predictor(version: ModelVersion, directory: Path, device: str) -> Predictor:
    model = get_recipe(version.recipe).load(directory, resolve_device(device))
    return ClassifierPredictor(version, model)
