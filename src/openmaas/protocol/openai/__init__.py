"""OpenAI's wire schemas, one module per surface (chat, completions, embeddings, models, files, fine_tuning,
batches), named as the spec names them. What every surface shares is in common.py and re-exported here."""

from openmaas.protocol.openai.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Role
from openmaas.protocol.openai.common import (
    MAX_INPUTS,
    SEED_MAX,
    SEED_MIN,
    CheckedByService,
    CompletionUsage,
    ErrorBody,
    ErrorDetail,
    JSONInt,
    ListOf,
)
from openmaas.protocol.openai.completions import Completion, CompletionRequest
from openmaas.protocol.openai.embeddings import CreateEmbeddingResponse, EmbeddingRequest
from openmaas.protocol.openai.files import FileDeleted, FileObject
from openmaas.protocol.openai.models import Model

__all__ = [
    "MAX_INPUTS",
    "SEED_MAX",
    "SEED_MIN",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "CheckedByService",
    "Completion",
    "CompletionRequest",
    "CompletionUsage",
    "CreateEmbeddingResponse",
    "EmbeddingRequest",
    "ErrorBody",
    "ErrorDetail",
    "FileDeleted",
    "FileObject",
    "JSONInt",
    "ListOf",
    "Model",
    "Role",
]
