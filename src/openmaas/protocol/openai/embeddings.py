"""OpenAI's embeddings surface: the request, and `CreateEmbeddingResponse` as the spec names it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from openmaas.protocol.openai.common import MAX_INPUTS, CheckedByService, JSONInt

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


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 bytes.")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
