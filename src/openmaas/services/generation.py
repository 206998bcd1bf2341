"""Generation use cases (chat and completions): validate messages, sampling options and the output format,
resolve a causal LM, queue the generation (with its grammar and logprobs when asked) and meter prompt and
completion tokens, whether the answer streams or not."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from openmaas.domain.entities import ModelVersion, Principal
from openmaas.domain.results import GenerationDone, TextDelta
from openmaas.errors import InvalidRequest, NotFound, Unavailable
from openmaas.recipes.chat import ROLES
from openmaas.runtime.backend import (
    BatchQueueClosed,
    GenerationFailed,
    ModelLoadError,
    OutputFormat,
    PromptRefused,
    QueueFull,
    SamplingParams,
    TokenStream,
    UnsupportedFormat,
    grammar_for,
)
from openmaas.services.inference import InferenceService, at_capacity, load_failed
from openmaas.services.limits import RateLimiter
from openmaas.services.registry import name_for
from openmaas.services.tasks import wrong_task
from openmaas.services.usage import UsageRecorder

MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: Any = None  # OpenAI's response_format, as sent: checked here (runtime/constraints.py)
    logprobs: int | None = None  # None: no logprobs; k: each token's and the k most likely at its position


def check_response_format(response_format: Any) -> OutputFormat | None:
    """The grammar a response_format asks for, or a 400 naming the part that cannot be honoured."""
    try:
        return grammar_for(response_format)
    except UnsupportedFormat as error:
        raise InvalidRequest(error.message, param=error.param, code="unsupported_response_format") from None


@dataclass
class GenerationStream:
    """A started generation: read it with `next()`, then `close()` it, which meters what it used."""

    model: str  # as the caller writes it (`owner/name` for another tenant's): in usage and in the response
    version: ModelVersion
    prompt_tokens: int
    rate_limit: dict[str, str]
    generation: TokenStream
    service: GenerationService
    principal: Principal
    started: float
    completion_tokens: int = 0
    finish_reason: str | None = None
    first: bool = True
    metered: asyncio.Task[None] | None = field(default=None, repr=False)
    protocol: str = "openai"  # in usage: "batch" for a request of /v1/batches

    async def next(self, keepalive_s: float | None = None) -> TextDelta | GenerationDone | None:
        """The next text piece, then one GenerationDone; None when `keepalive_s` passes without news.

        The first event may take up to the request timeout (the queue's wait and the prompt's forward pass).
        Whoever reads the stream must `close()` it, however the reading ends."""
        timeout = self.service.request_timeout_s if self.first else keepalive_s
        try:
            event = await self.generation.next(timeout)
        except GenerationFailed as error:
            raise Unavailable(f"generation failed: {error}", code="generation_failed") from None
        except QueueFull as error:  # a replica elsewhere answers that it is full with the stream's first event
            raise at_capacity(self.version, error, "generations waiting") from None
        except BatchQueueClosed:
            raise Unavailable(
                f"model {self.version.model}:{self.version.version} was unloaded during the request",
                code="model_unloaded",
            ) from None
        if event is None and self.first:
            raise Unavailable(
                f"no answer from {self.version.model}:{self.version.version} within "
                f"{self.service.request_timeout_s:g}s (the model is busy); retry later",
                code="timeout",
            )
        self.first = False
        if isinstance(event, GenerationDone):
            self.completion_tokens = event.completion_tokens
            self.finish_reason = event.finish_reason
        return event

    def close(self) -> asyncio.Task[None]:
        """Stop the generation (if it still runs) and meter what it used; idempotent."""
        if self.metered is None:
            self.generation.cancel()
            completion = self.completion_tokens or self.generation.completion_tokens
            # A task of its own: a cancelled stream (the client left) cannot await anything in its finally.
            self.metered = asyncio.ensure_future(self.service.meter(self, completion))
        return self.metered


def _text_content(content: Any, param: str) -> str:
    """A message's content: a string, or a list of text parts joined (OpenAI's two shapes)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(
                    f"{param}[{index}]: only text parts are supported, not {kind!r}",
                    param=f"{param}.{index}",
                    code="unsupported_content",
                )
            pieces.append(part["text"])
        return "".join(pieces)
    raise InvalidRequest(f"{param} must be a string or a list of text parts", param=param)


def check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    checked = []
    for index, message in enumerate(messages):
        param = f"messages.{index}"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{param} must be an object with role and content", param=param)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"{param}.role must be one of {', '.join(ROLES)}, not {role!r}", param=f"{param}.role")
        unsupported = sorted(set(message) - {"role", "content", "name"})
        if unsupported:
            raise InvalidRequest(
                f"{param}: {', '.join(unsupported)} not supported",
                param=f"{param}.{unsupported[0]}",
                code="unsupported_parameter",
            )
        checked.append({"role": role, "content": _text_content(message.get("content"), f"{param}.content")})
    return checked


def check_prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise InvalidRequest(
            f"prompt must be a string or a one-item list ({len(prompt)} prompts given; send one per request)",
            param="prompt",
            code="unsupported_parameter",
        )
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string (token-id prompts are not supported)", param="prompt")
    return prompt


def check_stop(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"stop takes at most {MAX_STOP_SEQUENCES} sequences", param="stop")
    return tuple(s for s in stops if s)


class GenerationService:
    def __init__(
        self,
        inference: InferenceService,
        limiter: RateLimiter,
        usage: UsageRecorder,
        preparing: set[str] | None = None,
        *,
        request_timeout_s: float = 60.0,
    ) -> None:
        self.preparing = preparing if preparing is not None else set()  # foundation models being converted
        self.inference = inference
        self.limiter = limiter
        self.usage = usage
        self.request_timeout_s = request_timeout_s

    async def chat(
        self, principal: Principal, ref: str, messages: Any, options: GenerationOptions, *, protocol: str = "openai"
    ) -> GenerationStream:
        checked = check_messages(messages)
        stream = await self._start(principal, ref, options, chat=checked)
        stream.protocol = protocol
        return stream

    async def complete(
        self, principal: Principal, ref: str, prompt: Any, options: GenerationOptions, *, protocol: str = "openai"
    ) -> GenerationStream:
        stream = await self._start(principal, ref, options, prompt=check_prompt(prompt))
        stream.protocol = protocol
        return stream

    async def _start(
        self,
        principal: Principal,
        ref: str,
        options: GenerationOptions,
        *,
        chat: list[dict[str, str]] | None = None,
        prompt: str | None = None,
    ) -> GenerationStream:
        stops = check_stop(options.stop)
        output = check_response_format(options.response_format)
        try:
            version = await self.inference.resolve(principal, ref)
        except NotFound:
            if ref.partition(":")[0] in self.preparing:
                raise Unavailable(
                    f"foundation model {ref!r} is being prepared (its first start converts it once); retry soon",
                    param="model",
                    code="model_preparing",
                    headers={"Retry-After": "10"},
                ) from None
            raise
        if version.task != "text-generation":
            route = "POST /v1/chat/completions" if chat is not None else "POST /v1/completions"
            raise wrong_task(ref, version.task, route)
        await self.limiter.check_tokens(principal)
        started = time.perf_counter()
        loaded = await self.inference.acquire(version)
        max_context = loaded.max_context or 0
        try:
            prompt_ids = await self.inference.backend.encode_prompt(version, chat=chat, prompt=prompt)
        except PromptRefused as error:
            raise InvalidRequest(f"the model's chat template refused the messages: {error}", param="messages") from None
        room = max_context - len(prompt_ids)
        if room < 1:
            raise InvalidRequest(
                f"the prompt has {len(prompt_ids)} tokens; {version.model}'s context is {max_context} tokens",
                param="messages" if chat is not None else "prompt",
                code="context_length_exceeded",
            )
        max_tokens = options.max_tokens if options.max_tokens is not None else room
        if max_tokens > room:
            raise InvalidRequest(
                f"max_tokens {max_tokens} + {len(prompt_ids)} prompt tokens exceed {version.model}'s context of "
                f"{max_context} tokens; ask for at most {room}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        params = SamplingParams(
            max_tokens, options.temperature, options.top_p, stops, options.seed, options.logprobs, output
        )
        # The prompt's tokens are counted before it runs (429 if they do not fit in what is left of the budget);
        # the completion's, which nobody knows yet, when the generation ends.
        reservation = await self.limiter.reserve_tokens(principal, len(prompt_ids))
        try:
            generation = await self._submit(version, prompt_ids, params, chat=chat is not None)
        except BaseException:
            await self.limiter.refund_failed(reservation)
            raise
        model_name = name_for(principal, version, ref)
        return GenerationStream(
            model_name, version, len(prompt_ids), reservation.headers, generation, self, principal, started
        )

    async def _submit(
        self, version: ModelVersion, prompt_ids: list[int], params: SamplingParams, *, chat: bool
    ) -> TokenStream:
        try:
            return await self.inference.backend.generate(version, prompt_ids, params)
        except ModelLoadError as error:
            raise load_failed(version, error) from None
        except QueueFull as error:
            raise at_capacity(version, error, "generations waiting") from None
        except UnsupportedFormat as error:  # the grammar compiled for this model's vocabulary, and failed
            # how many alternatives to list is chat's `top_logprobs`, and completions' `logprobs`
            param = "logprobs" if error.param == "top_logprobs" and not chat else error.param
            raise InvalidRequest(error.message, param=param, code="unsupported_response_format") from None
        except BatchQueueClosed:
            raise Unavailable(
                f"model {version.model}:{version.version} is being unloaded", code="model_unloaded"
            ) from None

    async def meter(self, stream: GenerationStream, completion_tokens: int) -> None:
        if completion_tokens:
            await self.limiter.charge_tokens(stream.principal, completion_tokens)
        await self.usage.record(
            stream.principal,
            model=stream.model,
            version=stream.version.version,
            items=1,
            tokens=stream.prompt_tokens,
            completion_tokens=completion_tokens,
            seconds=time.perf_counter() - stream.started,
            protocol=stream.protocol,
        )
