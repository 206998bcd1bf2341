"""Generation serving: a bounded queue per causal LM whose worker thread decodes the running generations
together, token by token on a KV cache (continuous batching), and hands each new piece of text to the waiting
coroutine as soon as it is decoded. Each sequence may carry its own token constraint (runtime/constraints.py:
structured output masks that row's logits) and ask for the log-probabilities of its tokens.

Nothing one request does can stop the worker: everything done for one generation (its sampler, its prompt's
forward pass, its sampling and decoding) fails that generation only, and an unexpected failure of the loop
itself fails the generations it concerns while the thread goes on. Should the thread end anyway, the queue
fails what waits at once, refuses new generations and tells its owner (`on_stopped`), which reloads the
model, instead of leaving callers to wait out their timeouts."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openmaas.domain.results import GenerationDone, TextDelta, TokenChoice, TokenLogprob
from openmaas.runtime.batching import BatchQueueClosed, BatchStats, QueueFull
from openmaas.runtime.constraints import OutputFormat

log = logging.getLogger(__name__)


class LanguageModel(Protocol):
    """What the queue needs of a causal LM (recipes.generative.CausalLM): forward passes on KV caches and
    the batch bookkeeping that lets sequences of different lengths decode together."""

    eos_token_ids: frozenset[int]
    max_context: int

    def decode(self, ids: Sequence[int]) -> str: ...

    def prefill(self, ids: Sequence[int], adapter: str | None = None) -> tuple[Any, Any]: ...

    def start_batch(self, cache: Any, length: int, adapter: str | None = None) -> Any: ...

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
    logprobs: int | None = None  # None: none; k: each token's log-probability and the k most likely (0..20)
    output: OutputFormat | None = None  # structured output: the checked response_format the text must satisfy


__all__ = [
    "GenerationDone",
    "GenerationFailed",
    "GenerationQueue",
    "Generations",
    "PromptRefused",
    "SamplingParams",
    "TextDelta",
    "TokenChoice",
    "TokenLogprob",
    "TokenStream",
]


class TokenStream(Protocol):
    """A started generation. `cancel()` stops it within a token; `completion_tokens` is what it produced so far."""

    @property
    def completion_tokens(self) -> int: ...

    async def next(self, timeout: float | None = None) -> TextDelta | GenerationDone | None:
        """The next text piece, then one GenerationDone; None when `timeout` passes first. Raises a failure."""
        ...

    def cancel(self) -> None: ...


class Generations(Protocol):
    """What serves one causal LM's generations: a GenerationQueue in this process, or a deployment's streams."""

    @property
    def depth(self) -> int: ...

    @property
    def alive(self) -> bool: ...

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> TokenStream:
        """Start a generation, or raise QueueFull (no room now) or BatchQueueClosed (no longer serving)."""
        ...

    async def close(self) -> None: ...


class PromptRefused(Exception):
    """The model's chat template refused the messages (roles out of order, say); the message says why."""


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
    # The largest logit is 0 before the division: a tiny temperature sends the others to -inf, never the
    # largest to +inf (inf - inf is nan), so every temperature above 0 gives a distribution. In float64, where
    # the temperature is what the caller sent (1e-300 is 0 in float32, and 0 / 0 is nan).
    logits = logits.double()
    probabilities = torch.softmax((logits - logits.max()) / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probabilities, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < params.top_p
        keep[0] = True  # the most likely token, whatever rounding does to a tiny top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probabilities, 1, generator=generator))


class TokenConstraint(Protocol):
    """One sequence's grammar (runtime/constraints.TokenConstraint): masks its row, follows its tokens."""

    @property
    def done(self) -> bool: ...

    def mask(self, logits: Any) -> Any: ...

    def accept(self, token: int) -> None: ...


class TokenTable(Protocol):
    """Each token's bytes (an llguidance tokenizer: runtime/constraints.token_table)."""

    def decode_bytes(self, tokens: list[int]) -> bytes: ...


def token_logprob(logits: Any, token: int, top: int, table: TokenTable) -> TokenLogprob:
    """The log-probability of `token` under the row's logits (after any constraint's mask, before temperature:
    the model's own distribution over what it may write) and the `top` most likely tokens."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)

    def choice(token_id: int, value: float) -> TokenChoice:
        raw = table.decode_bytes([token_id])
        return TokenChoice(raw.decode("utf-8", errors="replace"), raw, value)

    best: list[TokenChoice] = []
    if top:
        values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]))
        best = [choice(int(i), float(v)) for v, i in zip(values, ids, strict=True) if torch.isfinite(v)]
    return TokenLogprob(choice(token, float(logprobs[token])), tuple(best))


class Generation:
    """One request's handle: iterate it for events; `cancel()` stops the generation within one token."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        prompt_ids: list[int],
        params: SamplingParams,
        constraint: TokenConstraint | None = None,
        token_table: TokenTable | None = None,
        adapter: str | None = None,
    ) -> None:
        self.loop = loop
        self.adapter = adapter  # the LoRA adapter it decodes through, on a base that holds several
        self.prompt_ids = prompt_ids
        self.params = params
        self.constraint = constraint
        self.token_table = token_table  # needed when params.logprobs is set
        self.cancelled = threading.Event()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.completion_tokens = 0  # written by the worker as tokens come: what a cancelled request used
        self.first_token_at: float | None = None
        self.ended = False  # a last event (done or failed) was sent: nothing follows it

    def cancel(self) -> None:
        self.cancelled.set()

    def end(self, event: GenerationDone | BaseException) -> None:
        """Send the last event, once: a generation failed by two guards gets the first failure only."""
        if not self.ended:
            self.ended = True
            self.emit(event)

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
class Decoding:
    """A generation being decoded, as both engines keep it (this queue and runtime/openvino_engine.py): the
    tokens it produced, its stop matcher, and the log-probabilities of tokens whose text is not sent yet. It
    sends the text pieces and the last events, so that both engines hold back, flush and end alike."""

    generation: Generation
    matcher: StopMatcher
    started: float
    produced: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of the tokens whose text is not sent yet

    def send(self, text: str) -> bool:
        """Send the new piece of the decoded `text` that no stop string can claim; True when a stop string
        ended it."""
        piece, stopped = self.matcher.feed(text)
        if piece:
            self.generation.emit(TextDelta(piece, tuple(self.logprobs)))
            self.logprobs.clear()
        return stopped

    def done(self, reason: str, text: str | None) -> GenerationDone:
        """The last event of a finished generation. `text` is all it decoded: what was held back as a possible
        stop string's start is text after all, and is sent first (None: a stop string ended it, nothing to send)."""
        if text is not None:
            rest = self.matcher.flush(text.rstrip("\ufffd"))
            if rest or self.logprobs:
                self.generation.emit(TextDelta(rest, tuple(self.logprobs)))
                self.logprobs.clear()
        return GenerationDone(reason, len(self.generation.prompt_ids), len(self.produced))

    def end(self, event: GenerationDone | GenerationFailed | None, stats: BatchStats | None) -> float:
        """Send the last event (None: it was cancelled, nobody reads it any more) and report the generation to
        `stats`; the seconds it took."""
        if event is not None:
            self.generation.end(event)
        else:
            self.generation.ended = True
        elapsed = time.perf_counter() - self.started
        if stats is not None:
            first = (self.generation.first_token_at or time.perf_counter()) - self.started
            for observe in stats.on_generation:
                observe(self.generation.completion_tokens, first, elapsed)
        return elapsed


@dataclass
class _Slot(Decoding):
    """A generation being decoded by this queue: its sampler too, and the token to feed next (its last)."""

    generator: Any = None
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
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        if max_queue_size < 1 or max_batch_size < 1:
            raise ValueError("max_queue_size and max_batch_size must be at least 1")
        self.model = model
        self.max_queue_size = max_queue_size
        self.max_batch_size = max_batch_size
        self.name = name
        self.stats = stats
        self.on_stopped = on_stopped  # called from the worker thread should it ever end unasked
        self._pending: collections.deque[Generation] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._active: list[_Slot] = []
        self._admitted: list[Generation] = []  # taken from the queue in this round, being started
        self._retiring: list[tuple[str, Callable[[], None]]] = []  # adapters to release once no row uses them
        self._seconds_per_request = 1.0  # a running estimate for Retry-After
        self.cancelled = 0  # generations stopped by their callers before they finished
        self._thread = threading.Thread(target=self._work, name=f"generate-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        """Generations being decoded now."""
        return len(self._active)

    @property
    def alive(self) -> bool:
        """The worker thread decodes (or waits for work): false once it has stopped, asked or not."""
        return self._thread.is_alive() and not self._closed

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        constraint: TokenConstraint | None = None,
        token_table: TokenTable | None = None,
        adapter: str | None = None,
    ) -> Generation:
        if params.logprobs is not None and token_table is None:
            raise ValueError("logprobs need the model's token table")
        generation = Generation(asyncio.get_running_loop(), prompt_ids, params, constraint, token_table, adapter)
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

    def retire(self, adapter: str, release: Callable[[], None]) -> None:
        """Stop serving one LoRA adapter of a shared base: its waiting generations fail (as an unloaded model's
        do), its running ones stop within one token, and `release` runs on the worker thread once no row of
        the batch uses the adapter (it may then remove it from the model)."""
        with self._condition:
            waiting = [g for g in self._pending if g.adapter == adapter]
            self._pending = collections.deque(g for g in self._pending if g.adapter != adapter)
            running = [slot.generation for slot in self._active if slot.generation.adapter == adapter]
            self._retiring.append((adapter, release))
            self._condition.notify()
        for generation in waiting + running:
            generation.end(BatchQueueClosed(self.name))  # its reader learns the version was unloaded
            generation.cancel()  # and the worker drops its row at the next step

    def _release_retired(self) -> None:
        with self._condition:
            used = {slot.generation.adapter for slot in self._active}
            ready = [entry for entry in self._retiring if entry[0] not in used]
            self._retiring = [entry for entry in self._retiring if entry[0] in used]
        for adapter, release in ready:
            try:
                release()
            except Exception:  # the adapter stays in memory; serving goes on
                log.exception("releasing adapter %s of %s failed", adapter, self.name)

    async def close(self) -> None:
        with self._condition:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            for slot in self._active:
                slot.generation.cancel()
            self._condition.notify_all()
        for generation in pending:
            generation.end(BatchQueueClosed(self.name))

    def _admit(self) -> list[Generation] | None:
        """Generations to start now: waits only when nothing is running. None once the queue is closed."""
        with self._condition:
            while not self._pending and not self._active and not self._closed and not self._retiring:
                self._condition.wait()
            if self._closed:
                return None
            room = self.max_batch_size - len(self._active)
            return [self._pending.popleft() for _ in range(min(room, len(self._pending)))]

    def _work(self) -> None:
        try:
            self._decode()
        finally:
            self._stopped()

    def _decode(self) -> None:
        import torch

        batch: Any = None
        with torch.inference_mode():
            while (newcomers := self._admit()) is not None:
                self._admitted = newcomers
                try:
                    for generation in newcomers:
                        batch = self._start(generation, batch)
                    if self._active:
                        batch = self._step(batch)
                    if self._retiring:
                        self._release_retired()
                except Exception as error:  # a bug of the loop's own: fail what it concerns, keep serving
                    log.exception("the decoding loop failed on %s", self.name)
                    failure = GenerationFailed(f"{type(error).__name__}: {error}")
                    with self._condition:
                        active, self._active = self._active, []
                    for slot in active:
                        self._end(slot, failure)
                    for generation in newcomers:
                        generation.end(failure)
                    batch = None

    def _stopped(self) -> None:
        """The worker's last act, asked (close) or not: nothing it held or that waits for it may hang."""
        with self._condition:
            unasked = not self._closed
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
            active, self._active = self._active, []
        for generation in [slot.generation for slot in active] + self._admitted + pending:
            generation.end(BatchQueueClosed(self.name))  # a no-op for those that ended already
        if unasked:
            log.error("the decoding thread of %s stopped; its generations failed", self.name)
            if self.on_stopped is not None:
                self.on_stopped()

    def _start(self, generation: Generation, batch: Any) -> Any:
        """Read the prompt (its own forward pass), take the first token, and join the running batch."""
        import torch

        if generation.cancelled.is_set():
            generation.ended = True  # nobody reads it any more
            self.cancelled += 1
            return batch
        params = generation.params
        slot = _Slot(generation, StopMatcher(params.stop), time.perf_counter())
        try:  # everything of this generation's own: a failure here ends it, never the worker or the batch
            slot.generator = torch.Generator()
            if params.seed is not None:
                slot.generator.manual_seed(params.seed)
            else:
                slot.generator.seed()
            # The adapter is named only when there is one: a model with no adapters need not take the argument.
            adapter = {"adapter": generation.adapter} if generation.adapter is not None else {}
            logits, cache = self.model.prefill(generation.prompt_ids, **adapter)
            if self._take(slot, logits):
                return batch
            joined = self.model.join(batch, self.model.start_batch(cache, len(generation.prompt_ids), **adapter))
        except Exception as error:
            log.exception("generation failed on %s", self.name)
            self._end(slot, GenerationFailed(f"{type(error).__name__}: {error}"))
            return batch
        with self._condition:
            self._active.append(slot)
        return joined

    def _step(self, batch: Any) -> Any:
        """One token for every running generation; those that finish, fail or were cancelled leave the batch."""
        active = self._active
        try:
            logits = self.model.step([slot.produced[-1] for slot in active], batch)
        except Exception as error:  # the batch is lost: every stream in it ends with the error
            log.exception("generation failed on %s", self.name)
            for slot in active:
                self._end(slot, GenerationFailed(f"{type(error).__name__}: {error}"))
            with self._condition:
                self._active = []
            return None
        leaving = {row for row, slot in enumerate(active) if self._next_token(slot, logits[row])}
        if not leaving:
            return batch
        keep = [row for row in range(len(active)) if row not in leaving]
        with self._condition:
            self._active = [active[row] for row in keep]
        return self.model.keep_rows(batch, keep) if keep else None

    def _next_token(self, slot: _Slot, logits: Any) -> bool:
        """Sample and take one row's token. True when it leaves the batch: finished, cancelled or failed (its
        own sampling or decoding failed: that ends its stream only)."""
        if slot.generation.cancelled.is_set():
            self._end(slot, None)
            return True
        try:
            return self._take(slot, logits)
        except Exception as error:
            log.exception("generation failed on %s", self.name)
            self._end(slot, GenerationFailed(f"{type(error).__name__}: {error}"))
            return True

    def _take(self, slot: _Slot, logits: Any) -> bool:
        """Sample one row's next token (within its constraint's mask) and take it. True when finished."""
        generation = slot.generation
        if generation.constraint is not None:
            logits = generation.constraint.mask(logits)
        token = sample(logits, generation.params, slot.generator)
        top = generation.params.logprobs
        if top is not None and token not in self.model.eos_token_ids:  # OpenAI lists no end-of-text token
            assert generation.token_table is not None
            slot.logprobs.append(token_logprob(logits, token, top, generation.token_table))
        if generation.constraint is not None:
            generation.constraint.accept(token)
        return self._accept(slot, token)

    def _accept(self, slot: _Slot, token: int) -> bool:
        """Take a sampled token: send the text it completes. True when the generation is finished."""
        generation, params, model = slot.generation, slot.generation.params, self.model
        slot.produced.append(token)
        generation.completion_tokens = len(slot.produced)
        if generation.first_token_at is None:
            generation.first_token_at = time.perf_counter()
        if token in model.eos_token_ids:
            return self._finish(slot, "stop")
        slot.stopped_by_string = slot.send(model.decode(slot.produced))
        if slot.stopped_by_string:
            return self._finish(slot, "stop")
        if generation.constraint is not None and generation.constraint.done:  # the grammar has nothing left
            return self._finish(slot, "stop")
        if len(slot.produced) >= params.max_tokens:
            return self._finish(slot, "length")
        return False

    def _finish(self, slot: _Slot, reason: str) -> bool:
        text = None if slot.stopped_by_string else self.model.decode(slot.produced)
        self._end(slot, slot.done(reason, text))
        return True

    def _end(self, slot: _Slot, event: GenerationDone | GenerationFailed | None) -> None:
        if event is None:
            self.cancelled += 1
        elapsed = slot.end(event, self.stats)
        self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * elapsed
