"""OpenAI wire conventions: the error body and the list envelope."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# The sampler's seed is a signed 64-bit integer (torch.Generator.manual_seed refuses what is wider).
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


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
    dimensions: int | None = Field(None, strict=True, description="1 to the model's dimensions.")
    user: str | None = None
    truncate: bool = Field(True, description="Ours: false refuses inputs over the model's token limit.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _GenerationRequest(BaseModel):
    """Parameters shared by chat and completions. Unknown parameters are refused by name (400); numbers are
    numbers (strict: no strings or booleans for them) within the range the sampler takes."""

    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float = Field(1.0, ge=0, le=2, strict=True, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, strict=True, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX, strict=True)
    n: Literal[1] = Field(1, description="One choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: Literal[0] = Field(0, description="Not supported: only 0.")
    presence_penalty: Literal[0] = Field(0, description="Not supported: only 0.")


class ChatCompletionRequest(_GenerationRequest):
    messages: Any = Field(description="A list of {role, content}; content is a string or a list of text parts.")
    max_tokens: int | None = Field(None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    logprobs: Literal[False] = Field(False, description="Not supported.")


class CompletionRequest(_GenerationRequest):
    prompt: Any = Field(description="A string or a one-item list of strings.")
    max_tokens: int | None = Field(16, ge=1, strict=True, description="OpenAI's default is 16.")
    echo: Literal[False] = Field(False, description="Not supported.")
    logprobs: None = Field(None, description="Not supported.")
    suffix: None = Field(None, description="Not supported.")
    best_of: Literal[1] | None = None
