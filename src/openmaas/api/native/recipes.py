"""GET /v1/recipes: the recipes a job may name, with their hyperparameters' defaults, bounds and help."""

from __future__ import annotations

from fastapi import APIRouter

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Reader
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.protocol.dashboard import RecipeOut
from openmaas.protocol.openai import ListOf
from openmaas.services.recipes import recipe_catalog

router = APIRouter(route_class=JSONRoute, tags=["jobs"], responses=error_responses(*AUTHENTICATED))


@router.get("/v1/recipes", response_model=ListOf[RecipeOut])
def list_recipes(caller: Reader) -> ListOf[RecipeOut]:
    # A plain def: the first call imports the recipes (torch, transformers), in FastAPI's thread pool.
    return ListOf[RecipeOut](
        data=[
            RecipeOut(
                name=r.name, dataset_kind=r.dataset_kind, base_task=r.base_task, hyperparameters=r.hyperparameters
            )
            for r in recipe_catalog()
        ]
    )
