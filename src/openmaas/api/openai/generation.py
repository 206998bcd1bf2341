"""POST /v1/chat/completions and /v1/completions as OpenAI's clients expect them, whole or streamed over SSE.

A stream is: (chat only) a chunk with the assistant role, content chunks, a chunk with `finish_reason`, with
`stream_options.include_usage` a last chunk with empty `choices` and the usage, then `data: [DONE]`. Every chunk
has the same `id` and `created`. Keep-alives are SSE comments; a failure after the first byte is an `error` event.
With logprobs, each content chunk carries the logprobs of the tokens whose text it sends, shaped as OpenAI shapes
them: chat's `logprobs.content[{token, logprob, bytes, top_logprobs}]`, completions' `{tokens, token_logprobs,
top_logprobs, text_offset}` (offsets into the completion's text).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from openmaas.api.bodies import JSONRoute
from openmaas.api.deps import Inferrer, Svc, add_response_headers
from openmaas.api.disconnect import unless_disconnected
from openmaas.api.errors import AUTHENTICATED, error_responses
from openmaas.api.responses import FastJSONResponse
from openmaas.domain.results import GenerationDone, TextDelta, TokenChoice, TokenLogprob
from openmaas.errors import InvalidRequest, OpenMaaSError, status_and_type
from openmaas.protocol.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from openmaas.services.generation import GenerationOptions, GenerationStream

log = logging.getLogger(__name__)
# 404: no such model; 503: it could not be loaded, is being prepared or did not answer in time.
router = APIRouter(route_class=JSONRoute, tags=["openai"], responses=error_responses(*AUTHENTICATED, 404, 503))
KEEPALIVE_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _streamed(chunk: type[ChatCompletionChunk | Completion]) -> dict[int | str, dict[str, Any]]:
    # `stream: true` answers Server-Sent Events, each `data:` one chunk (then `data: [DONE]`).
    # OpenAPI before 3.2 has `schema` describe each event of a stream (its fields: data, event, id, retry).
    event = {
        "type": "object",
        "description": f"one Server-Sent Event: `data: <{chunk.__name__}>` events, then `data: [DONE]`",
        "properties": {"data": {"type": "string", "description": f"a {chunk.__name__} as JSON, or [DONE]"}},
        "required": ["data"],
    }
    events = {"schema": event}
    return {200: {"content": {"text/event-stream": events}}}


def generation_options(body: ChatCompletionRequest | CompletionRequest) -> GenerationOptions:
    """The service's options from a chat or completions request (also a batch's line)."""
    if isinstance(body, ChatCompletionRequest):
        if body.top_logprobs is not None and not body.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        max_tokens = body.max_completion_tokens or body.max_tokens
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
    else:
        max_tokens, logprobs = body.max_tokens, body.logprobs
    return GenerationOptions(
        max_tokens, body.temperature, body.top_p, body.stop, body.seed, body.response_format, logprobs
    )


def _choice_logprob(choice: TokenChoice) -> dict[str, Any]:
    return {"token": choice.token, "logprob": choice.logprob, "bytes": list(choice.bytes)}


def _top_by_text(top: tuple[TokenChoice, ...]) -> dict[str, float]:
    """Completions' {token: logprob}: where two tokens read alike (halves of characters), the likelier stays."""
    shown: dict[str, float] = {}
    for choice in top:
        shown.setdefault(choice.token, choice.logprob)
    return shown


class _Shape:
    """How one endpoint's answers look: chat's `message`/`delta`, or completions' `text`; and their logprobs."""

    def __init__(self, chat: bool, model: str, logprobs: bool = False) -> None:
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.object = "chat.completion" if chat else "text_completion"
        self.logprobs = logprobs
        self.offset = 0  # completions: where the next token's text starts in the completion

    def logprobs_of(self, tokens: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.chat:
            content = [
                {**_choice_logprob(t.chosen), "top_logprobs": [_choice_logprob(top) for top in t.top]} for t in tokens
            ]
            return {"content": content, "refusal": None}
        offsets = []
        for token in tokens:
            offsets.append(self.offset)
            self.offset += len(token.chosen.token)
        return {
            "tokens": [t.chosen.token for t in tokens],
            "token_logprobs": [t.chosen.logprob for t in tokens],
            "top_logprobs": [_top_by_text(t.top) for t in tokens],
            "text_offset": offsets,
        }

    def envelope(self, chunk: bool) -> dict[str, Any]:
        kind = self.object + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": None}

    def choice(
        self,
        text: str | None,
        finish_reason: str | None,
        *,
        chunk: bool,
        role: bool = False,
        tokens: tuple[TokenLogprob, ...] | list[TokenLogprob] | None = None,
    ) -> dict[str, Any]:
        logprobs = self.logprobs_of(tokens) if tokens is not None else None
        if not self.chat:
            return {"text": text or "", "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}
        if not chunk:
            message = {"role": "assistant", "content": text, "refusal": None}
            return {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def _usage(stream: GenerationStream) -> dict[str, int]:
    prompt, completion = stream.prompt_tokens, stream.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error_event(error: Exception) -> bytes:
    if isinstance(error, OpenMaaSError):
        _, type_ = status_and_type(error)
        body = {"message": error.message, "type": type_, "param": error.param, "code": error.code}
    else:
        log.exception("generation stream failed", exc_info=error)
        body = {"message": "internal server error", "type": "server_error", "param": None, "code": "internal_error"}
    return _event({"error": body})


async def _sse(
    stream: GenerationStream, shape: _Shape, first: TextDelta | GenerationDone | None, include_usage: bool
) -> AsyncIterator[bytes]:
    usage_field = {"usage": None} if include_usage else {}

    def chunk(
        text: str | None,
        finish_reason: str | None = None,
        role: bool = False,
        tokens: tuple[TokenLogprob, ...] | None = None,
    ) -> bytes:
        choice = shape.choice(text, finish_reason, chunk=True, role=role, tokens=tokens)
        return _event({**shape.envelope(chunk=True), "choices": [choice], **usage_field})

    try:
        if shape.chat:
            yield chunk(None, role=True)
        event = first
        while True:
            if event is None:
                yield b": keep-alive\n\n"
            elif isinstance(event, TextDelta):
                yield chunk(event.text, tokens=event.logprobs)
            else:
                yield chunk(None, event.finish_reason)
                break
            event = await stream.next(KEEPALIVE_SECONDS)
        if include_usage:
            yield _event({**shape.envelope(chunk=True), "choices": [], "usage": _usage(stream)})
        yield b"data: [DONE]\n\n"
    except Exception as error:  # after the first byte the status is sent: the failure travels in the stream
        yield _error_event(error)
    finally:  # also when the client disconnects: the generation stops within one token
        stream.close()


async def _close(stream: GenerationStream) -> None:
    await stream.close()


async def _collect(stream: GenerationStream) -> tuple[str, list[TokenLogprob]]:
    pieces: list[str] = []
    tokens: list[TokenLogprob] = []
    while not isinstance(event := await stream.next(), GenerationDone):
        if event is not None:
            pieces.append(event.text)
            tokens.extend(event.logprobs)
    return "".join(pieces), tokens


async def _answer(
    request: Request, stream: GenerationStream, shape: _Shape, streaming: bool, include_usage: bool
) -> FastJSONResponse | StreamingResponse:
    add_response_headers(request, stream.rate_limit)
    try:
        if streaming:
            # The first event before the status line: a busy model's timeout is still a clean 503.
            first = await unless_disconnected(request, stream.next(KEEPALIVE_SECONDS))
            return StreamingResponse(
                _sse(stream, shape, first, include_usage),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
                # Runs even when the client left before the body began (then _sse never ran to close it).
                background=BackgroundTask(_close, stream),
            )
        text, tokens = await unless_disconnected(request, _collect(stream))
    except BaseException:
        stream.close()
        raise
    await stream.close()
    return FastJSONResponse(_whole(stream, shape, text, tokens))


def _whole(stream: GenerationStream, shape: _Shape, text: str, tokens: list[TokenLogprob]) -> dict[str, Any]:
    return {
        **shape.envelope(chunk=False),
        "choices": [shape.choice(text, stream.finish_reason, chunk=False, tokens=tokens)],
        "usage": _usage(stream),
    }


async def whole_answer(stream: GenerationStream, chat: bool, model: str, logprobs: bool = False) -> dict[str, Any]:
    """A started generation's whole answer in OpenAI's shape, for a batch (which has no request to watch)."""
    try:
        text, tokens = await _collect(stream)
    except BaseException:
        stream.close()
        raise
    await stream.close()
    return _whole(stream, _Shape(chat, model, logprobs), text, tokens)


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_streamed(ChatCompletionChunk))
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, caller: Inferrer, svc: Svc
) -> FastJSONResponse | StreamingResponse:
    options = generation_options(body)
    stream = await unless_disconnected(request, svc.generation.chat(caller, body.model, body.messages, options))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    shape = _Shape(True, body.model, options.logprobs is not None)
    return await _answer(request, stream, shape, body.stream, include_usage)


@router.post("/v1/completions", response_model=Completion, responses=_streamed(Completion))
async def create_completion(
    body: CompletionRequest, request: Request, caller: Inferrer, svc: Svc
) -> FastJSONResponse | StreamingResponse:
    options = generation_options(body)
    stream = await unless_disconnected(request, svc.generation.complete(caller, body.model, body.prompt, options))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    shape = _Shape(False, body.model, options.logprobs is not None)
    return await _answer(request, stream, shape, body.stream, include_usage)
