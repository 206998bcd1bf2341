"""The native REST surface: datasets, training jobs, the model registry and predictions."""

from fastapi import APIRouter

from openmaas.api.native import datasets, jobs, models

router = APIRouter()
router.include_router(datasets.router)
router.include_router(jobs.router)
router.include_router(models.router)

__all__ = ["router"]
