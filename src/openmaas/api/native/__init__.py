"""The native REST surface: datasets, training jobs, the model registry and predictions."""

from fastapi import APIRouter

from openmaas.api.native import dataset_rows, datasets, jobs, models, recipes

# Included one by one by the app, not nested in one router: FastAPI matches a request again at every level of
# nesting. Routes are tried in order: predictions, the hot path, first.
routers: tuple[APIRouter, ...] = (
    models.predictions,
    models.router,
    datasets.router,
    dataset_rows.router,
    jobs.router,
    recipes.router,
)

__all__ = ["routers"]
