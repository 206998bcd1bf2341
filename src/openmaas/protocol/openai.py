"""OpenAI wire conventions: the error body and the list envelope."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ListOf(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request. `input` is checked by the service, which names the bad item."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    truncate: bool = Field(True, description="Ours: false refuses inputs over the model's token limit.")
