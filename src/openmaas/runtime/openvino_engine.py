"""The OpenVINO engine: a GGUF causal LM read as it is by OpenVINO GenAI (no float32 copy), its tokenizer and chat
template as the prompt side (`OpenVinoModel`), and `OpenVinoEngine`, one worker thread that drives the library's
continuous-batching pipeline: generations join with `add_request` as they come, every `step()` decodes one token
for all of them (paged KV cache, one forward pass), and each handle's new tokens go to its waiting coroutine.

As in the torch engine (runtime/generation.py), nothing one request does can stop the others: a request the
pipeline refuses fails alone, a cancelled one is dropped before the next step, and should a step itself fail,
the generations of that step fail while the thread goes on.

Structured output is the library's own (xgrammar inside OpenVINO GenAI): a JSON schema goes to the request's
StructuredOutputConfig, as a compact grammar (runtime/json_grammar.py) where it can be lowered to one. A schema
the library cannot compile fails the whole `step()` and leaves the pipeline unusable, so each new schema is first
compiled on a small probe pipeline of its own (`OpenVinoModel.check_output`, cached per schema) and refused with
a 400 there. Logprobs are the library's too: it reports the log-probability
of each token taken, and no alternatives, so `top_logprobs` above 0 is refused; the tokens' bytes come from the
GGUF's tokenizer read by transformers (llguidance's token table, as on the torch engine)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmaas.recipes.gguf import read_gguf
from openmaas.runtime.batching import BatchQueueClosed, BatchStats, QueueFull
from openmaas.runtime.constraints import OutputFormat, UnsupportedFormat, token_table
from openmaas.runtime.generation import (
    Decoding,
    Generation,
    GenerationDone,
    GenerationFailed,
    SamplingParams,
    StopMatcher,
    TokenChoice,
    TokenLogprob,
)
from openmaas.runtime.json_grammar import lower_schema

log = logging.getLogger(__name__)

# The KV cache is a pool of blocks the pipeline shares among its sequences; this is its size in GB when the
# pool's accounting has nothing better (SmolLM2-135M keeps 46 KB per token in float32: 1 GB holds ~23,000 tokens).
KV_CACHE_GB = 1
# What makes a sequence's greedy tokens the same alone and beside others. The CPU plugin's defaults are not:
# bf16 inference where the CPU has it, activations quantised on the fly for the int4/int8 weights, and a u8 KV
# cache each change a row's numbers with what shares its step. Measured on SmolLM2 (12 chats, 64 tokens each,
# joining a running batch at random steps): 7-8 of 12 differed from alone with the defaults, 1-2 with only the
# first two changed, none in 9 trials with all three; tokens/s offline at 1 and 4 sequences stayed within noise.
BATCH_INVARIANT = {
    "INFERENCE_PRECISION_HINT": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
    "KV_CACHE_PRECISION": "f32",
}
# KV blocks of the probe pipeline that compiles new schemas (a one-token prompt, one new token).
PROBE_KV_BLOCKS = 8


def structured_output(output: OutputFormat) -> Any:
    """The library's StructuredOutputConfig for a checked response_format."""
    import json

    import openvino_genai

    grammar = lower_schema(output.schema)
    if grammar is not None:
        return openvino_genai.StructuredOutputConfig(grammar=grammar)
    return openvino_genai.StructuredOutputConfig(json_schema=json.dumps(output.schema, sort_keys=True))


@dataclass
class OpenVinoModel:
    """A GGUF causal LM loaded into OpenVINO's continuous-batching pipeline, and its prompt side."""

    pipeline: Any
    tokenizer: Any
    max_context: int
    memory_bytes: int
    path: Path
    threads: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _probe: Any = None
    _compiled: set[str] = field(default_factory=set)
    _table: Any = None

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        text: str = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        return text

    def encode(self, text: str, *, chat: bool) -> list[int]:
        # A rendered chat holds the special tokens its template wants; a raw prompt gets the tokenizer's own.
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=not chat).input_ids.data[0].tolist()
        if not ids:
            bos = self.tokenizer.get_bos_token_id()
            ids = [bos if bos >= 0 else self.tokenizer.get_eos_token_id()]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    def warm_up(self) -> str:
        """One token for a short prompt: the pipeline compiles its graphs before the first request."""
        import openvino_genai

        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = 1
        results = self.pipeline.generate(["warm-up"], [config])
        return str(results[0].m_generation_ids[0]) if results else ""

    def check_output(self, output: OutputFormat) -> None:
        """Compile the format's grammar on the probe pipeline (once per schema); UnsupportedFormat if the
        library refuses it. Loads the probe pipeline the first time (seconds): call it off the event loop."""
        import json

        import numpy as np
        import openvino
        import openvino_genai

        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = 1
        config.structured_output_config = structured_output(output)
        key = json.dumps(output.schema, sort_keys=True)
        with self._lock:
            if key in self._compiled:
                return
            if self._probe is None:
                scheduler = openvino_genai.SchedulerConfig()
                scheduler.num_kv_blocks = PROBE_KV_BLOCKS
                properties = {"INFERENCE_NUM_THREADS": 1}
                self._probe = openvino_genai.ContinuousBatchingPipeline(str(self.path), scheduler, "CPU", properties)
            prompt = openvino.Tensor(np.array([self.encode("{", chat=False)], dtype=np.int64))
            try:
                handle = self._probe.add_request(0, prompt, config)
                while handle.get_status() == openvino_genai.GenerationStatus.RUNNING:
                    self._probe.step()
            except Exception as error:  # a failed step leaves the pipeline unusable: the next check loads another
                self._probe = None
                where = "response_format.json_schema.schema"
                # xgrammar's message, without the source path and line of its build ("...converter.cc:75: ")
                message = re.sub(r"^.*\.(cc|cpp|hpp|h):\d+:\s*", "", str(error).strip().splitlines()[-1])
                raise UnsupportedFormat(f"{where} is not supported by the OpenVINO engine: {message}", where) from None
            self._compiled.add(key)

    def token_table(self) -> Any:
        """Each token's bytes, for logprobs: the GGUF's tokenizer read by transformers (seconds, once)."""
        if self._table is not None:
            return self._table
        with self._lock:
            if self._table is None:
                from transformers import AutoTokenizer

                hf = AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
                self._table = token_table(hf, len(hf))
            return self._table

    def prepared(self, params: SamplingParams) -> bool:
        """Whether `prepare` has nothing left to do (read without the lock, which a probe may hold for seconds)."""
        import json

        schema_ready = params.output is None or json.dumps(params.output.schema, sort_keys=True) in self._compiled
        return schema_ready and (params.logprobs is None or self._table is not None)

    def prepare(self, params: SamplingParams) -> None:
        """What a generation with these parameters needs before it joins the pipeline (off the event loop)."""
        if params.output is not None:
            self.check_output(params.output)
        if params.logprobs is not None:
            self.token_table()


def load_openvino_model(gguf_file: Path, threads: int | None = None) -> OpenVinoModel:
    """Read the GGUF file (OpenVINO GenAI builds the model from it directly, dequantising nothing to disk)."""
    import openvino_genai

    info = read_gguf(gguf_file)
    scheduler = openvino_genai.SchedulerConfig()
    scheduler.cache_size = KV_CACHE_GB
    properties: dict[str, Any] = dict(BATCH_INVARIANT)
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
    pipeline = openvino_genai.ContinuousBatchingPipeline(str(gguf_file), scheduler, "CPU", properties)
    return OpenVinoModel(
        pipeline=pipeline,
        tokenizer=pipeline.get_tokenizer(),
        max_context=info.context_length,
        memory_bytes=gguf_file.stat().st_size + KV_CACHE_GB * 1024**3,
        path=gguf_file,
        threads=threads,
    )


def generation_config(params: SamplingParams) -> Any:
    """The library's GenerationConfig for our sampling parameters; stop strings are ours (StopMatcher), as in
    the torch engine, so both hold back and cut the text the same way."""
    import openvino_genai

    config = openvino_genai.GenerationConfig()
    config.max_new_tokens = params.max_tokens
    if params.temperature > 0:
        config.do_sample = True
        config.temperature = params.temperature
        config.top_p = params.top_p
        config.top_k = 0  # every token, as OpenAI's API samples
        if params.seed is not None:
            config.rng_seed = params.seed
    else:
        config.do_sample = False
    if params.output is not None:
        config.structured_output_config = structured_output(params.output)
    if params.logprobs is not None:
        config.logprobs = 1  # the library's most: the log-probability of the token taken
    return config


@dataclass
class _Running(Decoding):
    """A generation being decoded by the engine: its request's handle in the pipeline too."""

    handle: Any = field(kw_only=True)


class OpenVinoEngine:
    """Bounded FIFO in front of one OpenVinoModel, decoded by one worker thread with the pipeline's continuous
    batching; up to `max_batch_size` generations decode together. Implements runtime.engines.GenerationEngine."""

    def __init__(
        self,
        model: OpenVinoModel,
        *,
        max_queue_size: int,
        max_batch_size: int,
        name: str,
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
        self.on_stopped = on_stopped
        self._pending: collections.deque[Generation] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._running: list[_Running] = []
        self._ids = itertools.count()
        self._seconds_per_request = 1.0  # a running estimate for Retry-After
        self._thread = threading.Thread(target=self._work, name=f"openvino-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        if params.logprobs:
            raise UnsupportedFormat(
                f"{self.name} runs on the OpenVINO engine, which gives the log-probability of each token taken "
                "and no alternatives: top_logprobs must be 0 (completions: logprobs 0)",
                "top_logprobs",
            )
        generation = Generation(asyncio.get_running_loop(), prompt_ids, params)
        with self._condition:
            if self._closed:
                raise BatchQueueClosed(self.name)
            if len(self._pending) >= self.max_queue_size:
                waiting = len(self._pending)
                raise QueueFull(waiting, self.max_queue_size, waiting * self._seconds_per_request / self.max_batch_size)
            self._pending.append(generation)
            self._condition.notify()
        return generation

    async def close(self) -> None:
        with self._condition:
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
            for running in self._running:
                running.generation.cancel()
            self._condition.notify_all()
        for generation in pending:
            generation.end(BatchQueueClosed(self.name))

    def _admit(self) -> list[Generation] | None:
        with self._condition:
            while not self._pending and not self._running and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            room = self.max_batch_size - len(self._running)
            return [self._pending.popleft() for _ in range(min(room, len(self._pending)))]

    def _work(self) -> None:
        try:
            while (newcomers := self._admit()) is not None:
                for generation in newcomers:
                    self._start(generation)
                if self._running:
                    self._step()
        finally:
            self._stopped()

    def _stopped(self) -> None:
        with self._condition:
            unasked = not self._closed
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
            running, self._running = self._running, []
        for generation in [r.generation for r in running] + pending:
            generation.end(BatchQueueClosed(self.name))
        for item in running:
            item.handle.cancel()
        if unasked:
            log.error("the decoding thread of %s stopped; its generations failed", self.name)
            if self.on_stopped is not None:
                self.on_stopped()

    def _start(self, generation: Generation) -> None:
        """Add the generation to the pipeline; one the pipeline refuses fails alone."""
        import numpy as np
        import openvino

        if generation.cancelled.is_set():
            generation.ended = True
            return
        params = generation.params
        try:  # a caller that did not prepare (a Serve replica) pays for it here; a refused schema fails alone
            if not self.model.prepared(params):
                self.model.prepare(params)
        except UnsupportedFormat as error:
            generation.end(GenerationFailed(error.message))
            return
        try:
            prompt = openvino.Tensor(np.array([generation.prompt_ids], dtype=np.int64))
            handle = self.model.pipeline.add_request(next(self._ids), prompt, generation_config(params))
        except Exception as error:
            log.warning("the pipeline refused a generation on %s: %s", self.name, error)
            generation.end(GenerationFailed(f"{type(error).__name__}: {error}"))
            return
        with self._condition:
            self._running.append(_Running(generation, StopMatcher(params.stop), time.perf_counter(), handle=handle))

    def _step(self) -> None:
        """One token for every running generation; those that finish, fail or were cancelled leave."""
        import openvino_genai

        for item in self._running:  # cancelled ones leave before the step: no token is decoded for them
            if item.generation.cancelled.is_set():
                item.handle.cancel()
        try:
            self.model.pipeline.step()
        except Exception as error:  # the step is lost: every generation in it ends with the error
            log.exception("generation failed on %s", self.name)
            failure = GenerationFailed(f"{type(error).__name__}: {error}")
            with self._condition:
                running, self._running = self._running, []
            for item in running:
                item.handle.cancel()
                self._end(item, failure)
            return
        leaving = []
        for item in self._running:
            if item.generation.cancelled.is_set():
                self._end(item, None)
                leaving.append(item)
                continue
            try:
                if self._read(item, openvino_genai):
                    leaving.append(item)
            except Exception as error:  # this generation's own decoding failed: it ends alone
                log.exception("generation failed on %s", self.name)
                item.handle.cancel()
                self._end(item, GenerationFailed(f"{type(error).__name__}: {error}"))
                leaving.append(item)
        if leaving:
            with self._condition:
                self._running = [item for item in self._running if item not in leaving]

    def _read(self, item: _Running, genai: Any) -> bool:
        """Take the generation's new tokens; True when it is finished."""
        generation, model = item.generation, self.model
        finished = None
        if item.handle.can_read():
            for output in item.handle.read().values():
                item.produced.extend(output.generated_ids)
                if generation.params.logprobs is not None:
                    self._logprobs(item, output.generated_ids, output.generated_log_probs)
                if output.finish_reason == genai.GenerationFinishReason.LENGTH:
                    finished = "length"
                elif output.finish_reason != genai.GenerationFinishReason.NONE:
                    finished = "stop"
        status = item.handle.get_status()
        if finished is None and status != genai.GenerationStatus.RUNNING:
            if status == genai.GenerationStatus.FINISHED:
                finished = "length" if len(item.produced) >= generation.params.max_tokens else "stop"
            else:
                raise RuntimeError(f"the pipeline dropped the generation ({status.name})")
        if not item.produced:
            return finished is not None and self._finish(item, finished)
        generation.completion_tokens = len(item.produced)
        if generation.first_token_at is None:
            generation.first_token_at = time.perf_counter()
        if item.send(model.decode(item.produced)):
            item.handle.cancel()  # a stop string is ours to see: the pipeline drops the sequence before its next step
            return self._finish(item, "stop", flush=False)
        if finished is None and len(item.produced) >= generation.params.max_tokens:
            finished = "length"
        return finished is not None and self._finish(item, finished)

    def _logprobs(self, item: _Running, ids: Sequence[int], values: Sequence[float]) -> None:
        """The taken tokens' log-probabilities, as the library computed them (the model's distribution, before
        any grammar's mask); OpenAI lists no end-of-text token."""
        table = self.model.token_table()
        eos = self.model.tokenizer.get_eos_token_id()
        for token, value in zip(ids, values, strict=True):
            if token == eos:
                continue
            raw = table.decode_bytes([token])
            item.logprobs.append(TokenLogprob(TokenChoice(raw.decode("utf-8", errors="replace"), raw, value), ()))

    def _finish(self, item: _Running, reason: str, *, flush: bool = True) -> bool:
        self._end(item, item.done(reason, self.model.decode(item.produced) if flush else None))
        return True

    def _end(self, item: _Running, event: GenerationDone | GenerationFailed | None) -> None:
        elapsed = item.end(event, self.stats)
        self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * elapsed
