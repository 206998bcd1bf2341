"""The OpenAI-compatible surface: embeddings now; chat and completions arrive with generative models."""

from fastapi import APIRouter

from openmaas.api.openai import embeddings

router = APIRouter()
router.include_router(embeddings.router)

__all__ = ["router"]
