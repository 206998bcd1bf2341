"""Routes for /v1/batches as OpenAI's clients expect them, and `execute`: one batch request answered as its route
answers it (the same services and the same wire shapes), for the BatchRunner."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import ValidationError

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Inferrer, Reader, Services, Svc
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.api.native.models import predictions_of, top_k_of
from openmaas.api.openai.embeddings import embeddings_body
from openmaas.api.openai.generation import generation_options, whole_answer
from openmaas.domain.entities import Batch as StoredBatch
from openmaas.domain.entities import Principal
from openmaas.errors import InvalidRequest, OpenMaaSError, status_and_type
from openmaas.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ListOf
from openmaas.protocol.openai.batches import Batch, BatchCreate, BatchError, BatchRequestCounts, Errors
from openmaas.services.batches import Execute, WaitIdle

# The endpoints whose body names the model (predict's path does). A batch request waits for the model's queue
# to be empty before it goes in: online requests first (InferenceService.until_idle).
log = logging.getLogger(__name__)
BODY_NAMES_MODEL = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
router = APIRouter(route_class=JSONRoute, tags=["openai"], responses=error_responses(*AUTHENTICATED))


def batch_out(b: StoredBatch) -> Batch:
    times: dict[str, Any] = {k: int(v) for k, v in b.times.items()}
    return Batch(
        id=b.id,
        endpoint=b.endpoint,
        errors=Errors(data=[BatchError.model_validate(e) for e in b.errors]) if b.errors else None,
        input_file_id=b.input_file_id,
        completion_window=b.completion_window,
        status=b.status,  # type: ignore[arg-type]  # BatchService writes only these
        output_file_id=b.output_file_id,
        error_file_id=b.error_file_id,
        created_at=int(b.created_at),
        request_counts=BatchRequestCounts(total=b.total, completed=b.completed, failed=b.failed),
        metadata=b.metadata,
        **times,
    )


def _error(status: int, type_: str, message: str, param: str | None, code: str | None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _model_of(url: str, body: dict[str, Any]) -> Any:
    return body.get("model") if url in BODY_NAMES_MODEL else url.removeprefix("/v1/models/").removesuffix("/predict")


def idle_waiter(services: Services) -> WaitIdle:
    """Waits until nothing waits in the queue of the model a batch request names."""

    async def wait_idle(principal: Principal, url: str, body: dict[str, Any]) -> None:
        await services.inference.until_idle(principal, _model_of(url, body))

    return wait_idle


def executor(services: Services) -> Execute:
    async def execute(
        principal: Principal, url: str, body: dict[str, Any], *, yield_first: bool = True
    ) -> tuple[int, dict[str, Any]]:
        path_ref = url.removeprefix("/v1/models/").removesuffix("/predict")
        try:
            if yield_first:
                await services.inference.until_idle(principal, _model_of(url, body))
            if url == "/v1/embeddings":
                embedding = EmbeddingRequest.model_validate(body)
                answer = await services.inference.embed(
                    principal,
                    embedding.model,
                    embedding.input,
                    truncate=embedding.truncate,
                    dimensions=embedding.dimensions,
                    protocol="batch",
                )
                return 200, embeddings_body(embedding, answer.result)
            if url in ("/v1/chat/completions", "/v1/completions"):
                chat = url == "/v1/chat/completions"
                request = (ChatCompletionRequest if chat else CompletionRequest).model_validate(body)
                if request.stream:
                    raise InvalidRequest("a batch request cannot stream", param="stream")
                options = generation_options(request)
                if isinstance(request, ChatCompletionRequest):
                    stream = await services.generation.chat(
                        principal, request.model, request.messages, options, protocol="batch"
                    )
                else:
                    stream = await services.generation.complete(
                        principal, request.model, request.prompt, options, protocol="batch"
                    )
                return 200, await whole_answer(stream, chat, request.model, options.logprobs is not None)
            if "inputs" not in body:
                raise InvalidRequest('the body must be a JSON object {"inputs": ["text", ...]}', param="inputs")
            top_k = top_k_of(body.get("top_k"))
            result = await services.inference.predict(principal, path_ref, body["inputs"], protocol="batch")
            return 200, {
                "model": result.model,
                "version": result.version.version,
                "predictions": predictions_of(result.result, top_k),
            }
        except ValidationError as error:
            first = error.errors()[0]
            param = ".".join(str(part) for part in first["loc"]) or None
            return _error(400, "invalid_request_error", f"{param}: {first['msg']}", param, first["type"])
        except OpenMaaSError as error:
            status, type_ = status_and_type(error)
            return _error(status, type_, error.message, error.param, error.code)
        except Exception:  # our bug: this line's answer is a 500, and the batch goes on with the next line
            log.exception("a batch request to %s failed", url)
            return _error(500, "server_error", "internal error answering this request", None, "internal_error")

    return execute


@router.post("/v1/batches", response_model=Batch, responses=error_responses(404))
def create_batch(body: BatchCreate, caller: Inferrer, svc: Svc) -> Batch:
    batch = svc.batches.create(
        caller,
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
    )
    return batch_out(batch)


@router.get("/v1/batches", response_model=ListOf[Batch])
def list_batches(
    caller: Reader, svc: Svc, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> ListOf[Batch]:
    batches, more = svc.batches.list(caller, after=after, limit=limit)
    return ListOf[Batch](data=[batch_out(b) for b in batches], has_more=more)


@router.get("/v1/batches/{batch_id}", response_model=Batch, responses=error_responses(404))
def retrieve_batch(batch_id: str, caller: Reader, svc: Svc) -> Batch:
    return batch_out(svc.batches.get(caller, batch_id))


@router.post("/v1/batches/{batch_id}/cancel", response_model=Batch, responses=error_responses(404, 409))
def cancel_batch(batch_id: str, caller: Inferrer, svc: Svc) -> Batch:
    return batch_out(svc.batches.cancel(caller, batch_id))
