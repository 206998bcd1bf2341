"""POST /v1/embeddings, as OpenAI's clients expect it (float or base64 little-endian float32 vectors)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Inferrer, Svc, add_response_headers
from openmaas.api.disconnect import unless_disconnected
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.api.responses import FastJSONResponse
from openmaas.domain.results import Embeddings
from openmaas.protocol.openai import CreateEmbeddingResponse, EmbeddingRequest

# 404: no such model; 503: it could not be loaded, is being prepared or did not answer in time.
router = APIRouter(route_class=JSONRoute, tags=["openai"], responses=error_responses(*AUTHENTICATED, 404, 503))


# The answer is built as a dict (the vectors are already lists or base64): `CreateEmbeddingResponse` documents it.
@router.post("/v1/embeddings", response_class=FastJSONResponse, response_model=CreateEmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request, caller: Inferrer, svc: Svc) -> FastJSONResponse:
    work = svc.inference.embed(caller, body.model, body.input, truncate=body.truncate, dimensions=body.dimensions)
    result = await unless_disconnected(request, work)
    add_response_headers(request, result.rate_limit)
    return FastJSONResponse(embeddings_body(body, result.result))


def embeddings_body(body: EmbeddingRequest, embeddings: Embeddings) -> dict[str, Any]:
    """OpenAI's answer for `embeddings`, as asked for in `body` (also a batch's answer)."""
    vectors = embeddings.vectors.astype("<f4", copy=False)
    if body.encoding_format == "base64":
        encoded: list[object] = [base64.b64encode(np.ascontiguousarray(row).tobytes()).decode() for row in vectors]
    else:
        encoded = vectors.tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
        "model": body.model,
        "usage": {"prompt_tokens": embeddings.prompt_tokens, "total_tokens": embeddings.prompt_tokens},
    }
