"""OpenAI's model object, `Model` as the spec names it; the registry's answers extend it (protocol/native.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
