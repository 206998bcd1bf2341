"""The OpenAI-compatible surface: embeddings, chat completions, completions, files and fine-tuning jobs."""

from fastapi import APIRouter

from openmaas.api.openai import embeddings, files, fine_tuning, generation

# Included one by one by the app (see api/native/__init__.py).
routers: tuple[APIRouter, ...] = (embeddings.router, generation.router, files.router, fine_tuning.router)

__all__ = ["routers"]
