"""OpenAI wire conventions: the error body, the list envelope, and the requests of embeddings, chat and
completions.

`input`, `messages`, `prompt` and `dimensions` are documented with their types but reach the services as sent
(`CheckedByService`): the services check them and name the bad item (`input.1`, `messages.0.content.2`), which
pydantic's own messages for a union would not.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema

T = TypeVar("T")
# The server's default `max_predict_inputs`; the served document states the server's own setting.
MAX_INPUTS = 2048
# The roles the services accept (recipes/chat.py ROLES, which a unit test keeps equal to these).
Role = Literal["system", "user", "assistant", "tool", "developer"]


def _whole(value: Any) -> Any:
    # Only below 2**53 is a double the integer that was sent: orjson reads integers wider than 64 bits as
    # doubles, so -(2**63) - 1 would arrive as -(2**63), in range. Wider ones stay floats, which strict refuses.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# An integer as JSON Schema has it, for the requests' strict models: 3.0 is the integer 3; "3" and true are not.
JSONInt = Annotated[int, BeforeValidator(_whole)]


def _as_sent(value: Any) -> Any:
    return value


def CheckedByService(documented: Any) -> PlainValidator:  # noqa: N802 (used like a type in Annotated)
    """Document a field as `documented` while passing the value on unchecked, for the service to check."""
    return PlainValidator(_as_sent, json_schema_input_type=documented)

# The sampler takes a signed 64-bit seed (torch.Generator.manual_seed refuses what is wider); the bound is the
# integers every JSON reader holds exactly (domain.ids.DB_INT_MAX), so the OpenAPI schema states it exactly.
SEED_MIN, SEED_MAX = -(2**53 - 1), 2**53 - 1


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


Text = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request. `input` is checked by the service, which names the bad item."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    input: Annotated[
        Any, CheckedByService(Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)])
    ] = Field(description="A text or a non-empty list of texts, none of them empty.")
    encoding_format: Literal["float", "base64"] = "float"
    # The upper bound is the model's own (384 for all-minilm-l6-v2): the service checks both.
    dimensions: Annotated[
        JSONInt | None, WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]})
    ] = Field(None, description="Keep the leading components (at most the model's own dimensions), renormalised.")
    user: str | None = None
    truncate: bool = Field(True, description="Ours: false refuses inputs over the model's token limit.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


class _GenerationRequest(BaseModel):
    """Parameters shared by chat and completions. Unknown parameters are refused by name (400); numbers are
    numbers (strict: no strings or booleans for them) within the range the sampler takes."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    stop: Annotated[
        str | list[str] | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(None, description="Up to 4 sequences (services/generation.py MAX_STOP_SEQUENCES) that end the text.")
    seed: JSONInt | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: Literal[1] = Field(1, description="One choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: Literal[0] = Field(0, description="Not supported: only 0.")
    presence_penalty: Literal[0] = Field(0, description="Not supported: only 0.")


class TextPart(BaseModel):
    """One part of a message's content; only text parts are supported."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role
    content: str | list[TextPart]
    name: Any = Field(None, description="Accepted and ignored.")


class ChatCompletionRequest(_GenerationRequest):
    messages: Annotated[Any, CheckedByService(Annotated[list[ChatMessage], Field(min_length=1)])] = Field(
        description="A list of {role, content}; content is a string or a list of text parts."
    )
    max_tokens: JSONInt | None = Field(None, ge=1)
    max_completion_tokens: JSONInt | None = Field(None, ge=1)
    logprobs: Literal[False] = Field(False, description="Not supported.")


class CompletionRequest(_GenerationRequest):
    prompt: Annotated[Any, CheckedByService(str | Annotated[list[str], Field(min_length=1, max_length=1)])] = Field(
        description="A string or a one-item list of strings."
    )
    max_tokens: JSONInt | None = Field(16, ge=1, description="OpenAI's default is 16.")
    echo: Literal[False] = Field(False, description="Not supported.")
    logprobs: None = Field(None, description="Not supported.")
    suffix: None = Field(None, description="Not supported.")
    best_of: Literal[1] | None = None
