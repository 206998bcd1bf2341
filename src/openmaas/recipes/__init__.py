"""Training recipes behind one small interface; `get_recipe` imports a recipe only when it is used."""

from __future__ import annotations

import importlib

from openmaas.recipes.base import Recipe

# name -> module that defines RECIPE; imported lazily so the server starts without torch loaded.
CATALOG: dict[str, str] = {
    "bow-mlp": "openmaas.recipes.bow_mlp",
}


class UnknownRecipe(KeyError):
    pass


def get_recipe(name: str) -> Recipe:
    if name not in CATALOG:
        raise UnknownRecipe(name)
    module = importlib.import_module(CATALOG[name])
    recipe: Recipe = module.RECIPE
    return recipe


__all__ = ["CATALOG", "Recipe", "UnknownRecipe", "get_recipe"]
