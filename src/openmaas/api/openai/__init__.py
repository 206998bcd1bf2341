"""The OpenAI-compatible surface: embeddings, chat completions and completions."""

from fastapi import APIRouter

from openmaas.api.openai import embeddings, generation

# Included one by one by the app (see api/native/__init__.py).
routers: tuple[APIRouter, ...] = (embeddings.router, generation.router)

__all__ = ["routers"]
