"""What both peer servers share: load a trained version's files with the recipe's own loader, shape answers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openmaas.recipes import get_loader


def arguments(description: str, batching: bool = False, async_endpoint: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-dir", type=Path, required=True, help="The version's files, as the server loaded them.")
    parser.add_argument("--recipe", required=True, help="bow-mlp, transformer-classifier, ...")
    parser.add_argument("--runtime", required=True, help="The version's runtime: torch, onnx or onnx-int8.")
    parser.add_argument("--port", type=int, required=True)
    if async_endpoint:
        parser.add_argument("--async-endpoint", action="store_true", help="Run the forward pass on the event loop.")
    if batching:
        parser.add_argument("--max-batch-size", type=int, default=32)
        parser.add_argument("--batch-timeout", type=float, default=0.005, help="Seconds to wait for a batch to fill.")
    return parser.parse_args()


def load_classifier(directory: Path, recipe: str, runtime: str) -> Any:
    """The same call the OpenMaaS model pool makes: `RECIPE.load(directory, device, runtime)`."""
    return get_loader(recipe).load(directory, "cpu", runtime)


def predictions(labels: Sequence[str], probabilities: np.ndarray) -> list[dict[str, Any]]:
    """{"label", "score", "scores"} per text, exactly as OpenMaaS answers."""
    out = []
    for row in probabilities.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        out.append({"label": labels[best], "score": row[best], "scores": dict(zip(labels, row, strict=True))})
    return out
