"""The OpenAI-compatible surface: embeddings, chat completions and completions."""

from fastapi import APIRouter

from openmaas.api.openai import embeddings, generation

router = APIRouter()
router.include_router(embeddings.router)
router.include_router(generation.router)

__all__ = ["router"]
