"""Generation serving: a bounded queue per causal LM whose worker thread generates one request at a time, token
by token on a KV cache, and hands each new piece of text to the waiting coroutine as soon as it is decoded."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from openmaas.runtime.batching import BatchQueueClosed, BatchStats, QueueFull

log = logging.getLogger(__name__)


class LanguageModel(Protocol):
    eos_token_ids: frozenset[int]
    max_context: int

    def decode(self, ids: Sequence[int]) -> str: ...

    def prefill(self, ids: Sequence[int]) -> tuple[Any, Any]: ...

    def step(self, token: int, cache: Any) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class GenerationDone:
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


class GenerationFailed(Exception):
    """The model raised while generating; the stream must end with an error, never hang."""


Event = TextDelta | GenerationDone | BaseException


class StopMatcher:
    """Turns the growing decoded text into safe-to-send pieces: text that could still become a stop string is
    held back, and the text ends just before the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.sent = 0

    def feed(self, text: str) -> tuple[str, bool]:
        """(the new piece to send, whether a stop string was found)."""
        for stop in self.stops:
            at = text.find(stop, max(0, self.sent - len(stop) + 1))
            if at != -1:
                return self._take(text, at), True
        end = len(text)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            end = len(text) - 1
        for stop in self.stops:
            for size in range(min(len(stop) - 1, end - self.sent), 0, -1):
                if text[:end].endswith(stop[:size]):
                    end -= size
                    break
        return self._take(text, end), False

    def flush(self, text: str) -> str:
        return self._take(text, len(text))

    def _take(self, text: str, end: int) -> str:
        piece = text[self.sent : max(end, self.sent)]
        self.sent = max(end, self.sent)
        return piece


def sample(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Greedy at temperature 0; otherwise temperature and nucleus (top-p) sampling."""
    import torch

    if params.temperature <= 0:
        return int(torch.argmax(logits))
    probabilities = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probabilities, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < params.top_p  # always keeps the most likely token
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probabilities, 1, generator=generator))


class Generation:
    """One request's handle: iterate it for events; `cancel()` stops the generation within one token."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_ids: list[int], params: SamplingParams) -> None:
        self.loop = loop
        self.prompt_ids = prompt_ids
        self.params = params
        self.cancelled = threading.Event()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.completion_tokens = 0  # written by the worker as tokens come: what a cancelled request used
        self.first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, event: Event) -> None:
        """Called from the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            self.cancelled.set()

    async def next(self, timeout: float | None = None) -> TextDelta | GenerationDone | None:
        """The next event, or None when `timeout` passes first (time for a keep-alive). Raises a failure."""
        try:
            event = await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(event, BaseException):
            raise event
        return event


class GenerationQueue:
    """Bounded FIFO of generations in front of one model, run by one worker thread.

    One generation at a time keeps each token's latency flat; `max_queue_size` bounds the waiting ones, and a
    full queue refuses at once (the caller answers 429 with Retry-After)."""

    def __init__(
        self, model: LanguageModel, *, max_queue_size: int, name: str, stats: BatchStats | None = None
    ) -> None:
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        self.model = model
        self.max_queue_size = max_queue_size
        self.name = name
        self.stats = stats
        self._pending: collections.deque[Generation] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._running: Generation | None = None
        self._seconds_per_request = 1.0  # a running estimate for Retry-After
        self._thread = threading.Thread(target=self._work, name=f"generate-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        generation = Generation(asyncio.get_running_loop(), prompt_ids, params)
        with self._condition:
            if self._closed:
                raise BatchQueueClosed(self.name)
            if len(self._pending) >= self.max_queue_size:
                waiting = len(self._pending)
                raise QueueFull(waiting, self.max_queue_size, waiting * self._seconds_per_request)
            self._pending.append(generation)
            self._condition.notify()
        return generation

    async def close(self) -> None:
        with self._condition:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            if self._running is not None:
                self._running.cancel()
            self._condition.notify_all()
        for generation in pending:
            generation.emit(BatchQueueClosed(self.name))

    def _next(self) -> Generation | None:
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            self._running = self._pending.popleft()
            return self._running

    def _work(self) -> None:
        while (generation := self._next()) is not None:
            started = time.perf_counter()
            try:
                if not generation.cancelled.is_set():
                    self._generate(generation)
            except Exception as error:  # noqa: BLE001 (any model failure must end the stream, not the worker)
                log.exception("generation failed on %s", self.name)
                generation.emit(GenerationFailed(f"{type(error).__name__}: {error}"))
            finally:
                with self._condition:
                    self._running = None
                elapsed = time.perf_counter() - started
                self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * elapsed
                if self.stats is not None:
                    first = (generation.first_token_at or time.perf_counter()) - started
                    for observe in self.stats.on_generation:
                        observe(generation.completion_tokens, first, elapsed)

    def _generate(self, generation: Generation) -> None:
        import torch

        params = generation.params
        model = self.model
        generator = torch.Generator()
        if params.seed is not None:
            generator.manual_seed(params.seed)
        else:
            generator.seed()
        matcher = StopMatcher(params.stop)
        produced: list[int] = []
        finish, stopped = "length", False
        with torch.inference_mode():
            logits, cache = model.prefill(generation.prompt_ids)
            while len(produced) < params.max_tokens:
                if generation.cancelled.is_set():
                    return
                token = sample(logits, params, generator)
                produced.append(token)
                generation.completion_tokens = len(produced)
                if generation.first_token_at is None:
                    generation.first_token_at = time.perf_counter()
                if token in model.eos_token_ids:
                    finish = "stop"
                    break
                piece, stopped = matcher.feed(model.decode(produced))
                if piece:
                    generation.emit(TextDelta(piece))
                if stopped:
                    finish = "stop"
                    break
                if len(produced) < params.max_tokens:
                    logits, cache = model.step(token, cache)
        if not stopped:  # what was held back as a possible stop string's start is text after all
            rest = matcher.flush(model.decode(produced).rstrip("\ufffd"))
            if rest:
                generation.emit(TextDelta(rest))
        generation.emit(GenerationDone(finish, len(generation.prompt_ids), len(produced)))
