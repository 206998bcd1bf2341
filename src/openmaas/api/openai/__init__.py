"""The OpenAI-compatible surface: embeddings, chat completions, completions, files, fine-tuning jobs and batches."""

from fastapi import APIRouter

from openmaas.api.openai import batches, embeddings, files, fine_tuning, generation

# Included one by one by the app (see api/native/__init__.py).
routers: tuple[APIRouter, ...] = (
    embeddings.router,
    generation.router,
    files.router,
    fine_tuning.router,
    batches.router,
)

__all__ = ["routers"]
