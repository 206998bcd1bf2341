"""OpenAI wire conventions shared by every surface: the error body, the list envelope, integers as JSON has them,
fields checked by the services, and the sampling parameters of chat and completions.

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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


class GenerationRequest(BaseModel):
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


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJSONObject(BaseModel):
    """Any JSON object."""

    type: Literal["json_object"]


class JSONSchemaFormat(BaseModel):
    name: str = Field(min_length=1)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="A JSON Schema the text must satisfy.")
    strict: bool | None = None


class ResponseFormatJSONSchema(BaseModel):
    """Text that parses as JSON and validates against `json_schema.schema` (constrained decoding)."""

    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


# Checked by the service (runtime/constraints.py), which names the unsupported part in its 400.
ResponseFormat = Annotated[
    Any, CheckedByService(ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema | None)
]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
