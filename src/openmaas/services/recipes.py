"""The recipe catalogue: each trainable recipe's name, the dataset kind it takes and its hyperparameters' schema,
read from the recipe's own declarations (its pydantic `Hyperparameters` model)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from openmaas.recipes import CATALOG, get_recipe


@dataclass(frozen=True)
class RecipeInfo:
    name: str
    dataset_kind: str
    base_task: str | None
    hyperparameters: dict[str, Any]  # JSON Schema


@functools.cache
def recipe_catalog() -> tuple[RecipeInfo, ...]:
    """Imports every recipe (torch and transformers with them) on the first call, so it is cached: the
    declarations do not change while the process runs."""
    infos = []
    for name in CATALOG:
        recipe = get_recipe(name)
        schema = recipe.hyperparameters.model_json_schema()
        infos.append(RecipeInfo(name, recipe.dataset_kind, recipe.base_task, schema))
    return tuple(infos)
