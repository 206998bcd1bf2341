"""OpenAI's chat completions: the request with its messages, and `ChatCompletion` / `ChatCompletionChunk` as the
spec names them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from openmaas.protocol.openai.common import (
    CheckedByService,
    CompletionUsage,
    FinishReason,
    GenerationRequest,
    JSONInt,
    ResponseFormat,
)

# The roles the services accept (recipes/chat.py ROLES, which a unit test keeps equal to these).
Role = Literal["system", "user", "assistant", "tool", "developer"]


class TextPart(BaseModel):
    """One part of a message's content; only text parts are supported."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role
    content: str | list[TextPart]
    name: Any = Field(None, description="Accepted and ignored.")


class ChatCompletionRequest(GenerationRequest):
    messages: Annotated[Any, CheckedByService(Annotated[list[ChatMessage], Field(min_length=1)])] = Field(
        description="A list of {role, content}; content is a string or a list of text parts."
    )
    max_tokens: JSONInt | None = Field(None, ge=1)
    max_completion_tokens: JSONInt | None = Field(None, ge=1)
    logprobs: bool = Field(False, description="Return each output token's log-probability.")
    top_logprobs: JSONInt | None = Field(
        None, ge=0, le=20, description="With logprobs: the most likely tokens at each position, up to 20."
    )
    response_format: ResponseFormat = Field(
        None, description='{"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}}.'
    )


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatCompletionTokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[ChatCompletionTokenLogprob] | None
    refusal: list[ChatCompletionTokenLogprob] | None = None


class Choice(BaseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: CompletionUsage


class ChoiceDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a stream; with `stream_options.include_usage` the last has no choices and the usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
