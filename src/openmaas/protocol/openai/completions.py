"""OpenAI's (legacy) completions: the request, and `Completion` as the spec names it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from openmaas.protocol.openai.common import (
    CheckedByService,
    CompletionUsage,
    FinishReason,
    GenerationRequest,
    JSONInt,
    ResponseFormat,
)


class CompletionRequest(GenerationRequest):
    prompt: Annotated[Any, CheckedByService(str | Annotated[list[str], Field(min_length=1, max_length=1)])] = Field(
        description="A string or a one-item list of strings."
    )
    max_tokens: JSONInt | None = Field(16, ge=1, description="OpenAI's default is 16.")
    echo: Literal[False] = Field(False, description="Not supported.")
    logprobs: JSONInt | None = Field(
        None, ge=0, le=5, description="Each token's log-probability and the `logprobs` most likely tokens (up to 5)."
    )
    response_format: ResponseFormat = Field(None, description="As chat's: JSON output, constrained by a schema.")
    suffix: None = Field(None, description="Not supported.")
    best_of: Literal[1] | None = None


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: Logprobs | None = None
    finish_reason: FinishReason | None


class Completion(BaseModel):
    """A whole answer, and also each `data:` event of a stream (then `usage` is null but on the last)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
