"""Training recipes behind one small interface; `get_recipe` imports a recipe only when it is used."""

from __future__ import annotations

import importlib

from openmaas.recipes.base import ImageRecipe, Loader, Recipe, TextRecipe

# name -> module that defines RECIPE; imported lazily so the server starts without torch loaded.
CATALOG: dict[str, str] = {
    "bow-mlp": "openmaas.recipes.bow_mlp",
    "transformer-classifier": "openmaas.recipes.transformer_classifier",
    "causal-lm": "openmaas.recipes.causal_lm",
    "lora": "openmaas.recipes.lora",
    "image-cnn": "openmaas.recipes.image_cnn",
    "image-classifier": "openmaas.recipes.image_classifier",
}
# Everything that can load a model version for serving: the trainable recipes plus load-only ones.
LOADERS: dict[str, str] = {
    **CATALOG,
    "sentence-embedding": "openmaas.recipes.sentence_embedding",
    "pretrained-image-classifier": "openmaas.recipes.hf_image",
}


class UnknownRecipe(KeyError):
    pass


def get_recipe(name: str) -> Recipe | TextRecipe | ImageRecipe:
    """A classification recipe or a language-model one: `dataset_kind` tells which (and narrows the type)."""
    if name not in CATALOG:
        raise UnknownRecipe(name)
    recipe: Recipe | TextRecipe | ImageRecipe = importlib.import_module(CATALOG[name]).RECIPE
    return recipe


def get_loader(name: str) -> Loader:
    if name not in LOADERS:
        raise UnknownRecipe(name)
    loader: Loader = importlib.import_module(LOADERS[name]).RECIPE
    return loader


__all__ = [
    "CATALOG",
    "LOADERS",
    "ImageRecipe",
    "Loader",
    "Recipe",
    "TextRecipe",
    "UnknownRecipe",
    "get_loader",
    "get_recipe",
]
