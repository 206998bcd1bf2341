"""Generation serving: a bounded queue per causal LM whose worker thread decodes the running generations
together, token by token on a KV cache (continuous batching), and hands each new piece of text to the waiting
coroutine as soon as it is decoded."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openmaas.runtime.batching import BatchQueueClosed, BatchStats, QueueFull

log = logging.getLogger(__name__)


class LanguageModel(Protocol):
    """What the queue needs of a causal LM (recipes.generative.CausalLM): forward passes on KV caches and
    the batch bookkeeping that lets sequences of different lengths decode together."""

    eos_token_ids: frozenset[int]
    max_context: int

    def decode(self, ids: Sequence[int]) -> str: ...

    def prefill(self, ids: Sequence[int]) -> tuple[Any, Any]: ...

    def start_batch(self, cache: Any, length: int) -> Any: ...

    def join(self, batch: Any, other: Any) -> Any: ...

    def step(self, tokens: Sequence[int], batch: Any) -> Any: ...

    def keep_rows(self, batch: Any, rows: Sequence[int]) -> Any: ...


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


@dataclass
class _Slot:
    """A generation being decoded: its sampler, what it produced and the token to feed next."""

    generation: Generation
    generator: Any
    matcher: StopMatcher
    started: float
    produced: list[int] = field(default_factory=list)
    stopped_by_string: bool = False


class GenerationQueue:
    """Bounded FIFO of generations in front of one model, decoded by one worker thread with continuous
    batching: up to `max_batch_size` generations share each decoding step (one forward pass for all their
    next tokens), a new one joins the running batch as soon as its prompt is read, and a finished or
    cancelled one leaves it at once. `max_queue_size` bounds the waiting ones; a full queue refuses at once
    (the caller answers 429 with Retry-After)."""

    def __init__(
        self,
        model: LanguageModel,
        *,
        max_queue_size: int,
        name: str,
        max_batch_size: int = 1,
        stats: BatchStats | None = None,
    ) -> None:
        if max_queue_size < 1 or max_batch_size < 1:
            raise ValueError("max_queue_size and max_batch_size must be at least 1")
        self.model = model
        self.max_queue_size = max_queue_size
        self.max_batch_size = max_batch_size
        self.name = name
        self.stats = stats
        self._pending: collections.deque[Generation] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._active: list[_Slot] = []
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
                retry = waiting * self._seconds_per_request / self.max_batch_size
                raise QueueFull(waiting, self.max_queue_size, retry)
            self._pending.append(generation)
            self._condition.notify()
        return generation

    async def close(self) -> None:
        with self._condition:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            for slot in self._active:
                slot.generation.cancel()
            self._condition.notify_all()
        for generation in pending:
            generation.emit(BatchQueueClosed(self.name))

    def _admit(self) -> list[Generation] | None:
        """Generations to start now: waits only when nothing is running. None once the queue is closed."""
        with self._condition:
            while not self._pending and not self._active and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            room = self.max_batch_size - len(self._active)
            return [self._pending.popleft() for _ in range(min(room, len(self._pending)))]

    def _work(self) -> None:
        import torch

        batch: Any = None
        with torch.inference_mode():
            while (newcomers := self._admit()) is not None:
                for generation in newcomers:
                    batch = self._start(generation, batch)
                if self._active:
                    batch = self._step(batch)
        for slot in self._active:
            slot.generation.emit(BatchQueueClosed(self.name))

    def _start(self, generation: Generation, batch: Any) -> Any:
        """Read the prompt (its own forward pass), take the first token, and join the running batch."""
        import torch

        if generation.cancelled.is_set():
            return batch
        generator = torch.Generator()
        if generation.params.seed is not None:
            generator.manual_seed(generation.params.seed)
        else:
            generator.seed()
        slot = _Slot(generation, generator, StopMatcher(generation.params.stop), time.perf_counter())
        try:
            logits, cache = self.model.prefill(generation.prompt_ids)
            if self._accept(slot, sample(logits, generation.params, generator)):
                return batch
            joined = self.model.join(batch, self.model.start_batch(cache, len(generation.prompt_ids)))
        except Exception as error:  # noqa: BLE001 (a failure ends this stream, never the worker)
            log.exception("generation failed on %s", self.name)
            self._end(slot, GenerationFailed(f"{type(error).__name__}: {error}"))
            return batch
        with self._condition:
            self._active.append(slot)
        return joined

    def _step(self, batch: Any) -> Any:
        """One token for every running generation; those that finish or were cancelled leave the batch."""
        active = self._active
        try:
            logits = self.model.step([slot.produced[-1] for slot in active], batch)
            leaving = {
                row
                for row, slot in enumerate(active)
                if slot.generation.cancelled.is_set()
                or self._accept(slot, sample(logits[row], slot.generation.params, slot.generator))
            }
        except Exception as error:  # noqa: BLE001 (the batch is lost: every stream in it ends with the error)
            log.exception("generation failed on %s", self.name)
            for slot in active:
                self._end(slot, GenerationFailed(f"{type(error).__name__}: {error}"))
            with self._condition:
                self._active = []
            return None
        if not leaving:
            return batch
        for row in leaving:
            if active[row].generation.cancelled.is_set():
                self._end(active[row], None)
        keep = [row for row in range(len(active)) if row not in leaving]
        with self._condition:
            self._active = [active[row] for row in keep]
        return self.model.keep_rows(batch, keep) if keep else None

    def _accept(self, slot: _Slot, token: int) -> bool:
        """Take a sampled token: send the text it completes. True when the generation is finished."""
        generation, params, model = slot.generation, slot.generation.params, self.model
        slot.produced.append(token)
        generation.completion_tokens = len(slot.produced)
        if generation.first_token_at is None:
            generation.first_token_at = time.perf_counter()
        if token in model.eos_token_ids:
            return self._finish(slot, "stop")
        piece, slot.stopped_by_string = slot.matcher.feed(model.decode(slot.produced))
        if piece:
            generation.emit(TextDelta(piece))
        if slot.stopped_by_string:
            return self._finish(slot, "stop")
        if len(slot.produced) >= params.max_tokens:
            return self._finish(slot, "length")
        return False

    def _finish(self, slot: _Slot, reason: str) -> bool:
        if not slot.stopped_by_string:  # what was held back as a possible stop string's start is text after all
            rest = slot.matcher.flush(self.model.decode(slot.produced).rstrip("\ufffd"))
            if rest:
                slot.generation.emit(TextDelta(rest))
        prompt = len(slot.generation.prompt_ids)
        self._end(slot, GenerationDone(reason, prompt, len(slot.produced)))
        return True

    def _end(self, slot: _Slot, event: GenerationDone | GenerationFailed | None) -> None:
        if event is not None:
            slot.generation.emit(event)
        elapsed = time.perf_counter() - slot.started
        self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * elapsed
        if self.stats is not None:
            first = (slot.generation.first_token_at or time.perf_counter()) - slot.started
            for observe in self.stats.on_generation:
                observe(slot.generation.completion_tokens, first, elapsed)
