"""The OpenAI-compatible surface: embeddings, chat completions, completions and files."""

from fastapi import APIRouter

from openmaas.api.openai import embeddings, files, generation

# Included one by one by the app (see api/native/__init__.py).
routers: tuple[APIRouter, ...] = (embeddings.router, generation.router, files.router)

__all__ = ["routers"]
