"""What runs on a Ray Serve replica of a version (`ModelReplica`) and what the API process's pool holds in its
place (`RemotePredictor`, `RemoteEmbeddings`, `RemoteGenerator`): predictors whose calls go to the replicas
through a deployment handle, and for a causal LM, token streams read from a streaming handle."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from openmaas.domain.entities import ModelVersion
from openmaas.domain.results import GenerationDone, TextDelta
from openmaas.domain.scaling import Scaling
from openmaas.recipes.base import InputTooLong
from openmaas.runtime.batching import BatchQueueClosed, QueueFull
from openmaas.runtime.constraints import row_constraint
from openmaas.runtime.generation import (
    GenerationFailed,
    GenerationQueue,
    Generations,
    PromptRefused,
    SamplingParams,
    TokenStream,
)
from openmaas.runtime.predictors import EmbeddingPredictor, GenerativePredictor, load_predictor


class ModelReplica:
    """A Serve replica of one version: loads it from the artifact store (the settings its API process forwarded)
    and runs the batches it is handed, or, for a causal LM, decodes the generations it is handed in its own
    generation queue and streams their text back."""

    def __init__(self, version: ModelVersion, device: str) -> None:
        from openmaas.config import Settings
        from openmaas.storage.artifacts import open_artifact_store

        settings = Settings()
        artifacts = open_artifact_store(settings.artifacts_url, settings.artifacts_dir, settings.artifacts_cache_dir)
        self.scratch = tempfile.TemporaryDirectory(prefix="openmaas-replica-")
        directory = artifacts.materialize(version.files, Path(self.scratch.name) / "model")
        self.predictor = load_predictor(version, directory, device)
        self.predictor.run_batch([getattr(self.predictor, "warm_up_input", "warm-up")])  # an image for image models
        self.generations: Generations | None = None
        if isinstance(self.predictor, GenerativePredictor):  # decoded here, continuous batching across callers
            self.generations = self.predictor.start_engine(
                max_queue_size=settings.max_queued_generations,
                max_batch_size=settings.generation_batch_size,
                name=f"{version.model}:{version.version}",
                stats=None,
                on_stopped=None,
            )

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = {"memory_bytes": self.predictor.memory_bytes, "labels": self.predictor.labels}
        found["embeds_images"] = getattr(self.predictor, "embeds_images", False)
        if isinstance(self.predictor, EmbeddingPredictor):
            found.update(dimensions=self.predictor.dimensions, max_length=self.predictor.max_length)
        if isinstance(self.predictor, GenerativePredictor):
            found.update(max_context=self.predictor.max_context)
        if self.generations is not None:
            generations = self.generations
            found.update(
                generating=getattr(generations, "running", 0),
                waiting=generations.depth,
                cancelled=getattr(generations, "cancelled", 0),
            )
        return found

    def encode_prompt(self, chat: list[dict[str, str]] | None, prompt: str | None) -> list[int] | str:
        """The prompt's token ids, or (a string) why the chat template refused the messages."""
        assert isinstance(self.predictor, GenerativePredictor)
        try:
            return self.predictor.encode_prompt(chat, prompt)
        except PromptRefused as error:  # as a value: Ray wraps exceptions of its tasks in its own
            return str(error)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[tuple[Any, int]]:
        """The generation's events, each with the tokens produced so far; failures as values ("full", "closed",
        "failed"). Serve cancels this generator when its caller cancels the stream: the generation stops."""
        assert self.generations is not None and isinstance(self.predictor, GenerativePredictor)
        generation: TokenStream
        try:
            if isinstance(self.generations, GenerationQueue):  # the torch engine: the grammar over its tokenizer
                constraint, table = None, None
                if params.output is not None or params.logprobs is not None:
                    constraint, table = await asyncio.to_thread(row_constraint, self.predictor.causal_lm, params.output)
                generation = self.generations.submit(prompt_ids, params, constraint, table)
            else:
                generation = self.generations.submit(prompt_ids, params)
        except QueueFull as error:
            yield ("full", error.queued, error.capacity, error.retry_after), 0
            return
        except BatchQueueClosed:
            yield ("closed",), 0
            return
        try:
            while True:
                try:
                    event = await generation.next(None)
                except GenerationFailed as error:
                    yield ("failed", str(error)), generation.completion_tokens
                    return
                except BatchQueueClosed:
                    yield ("closed",), generation.completion_tokens
                    return
                yield event, generation.completion_tokens
                if isinstance(event, GenerationDone):
                    return
        finally:
            generation.cancel()

    async def run(self, items: list[Any]) -> list[Any]:
        return await asyncio.to_thread(self.predictor.run_batch, items)

    def too_long(self, texts: list[str]) -> tuple[int, int, int] | None:
        assert isinstance(self.predictor, EmbeddingPredictor)
        try:
            self.predictor.check_lengths(texts)
        except InputTooLong as error:  # as values: Ray wraps exceptions of its tasks in its own
            return error.index, error.tokens, error.max_length
        return None

    def count_tokens(self, texts: list[str]) -> int:
        assert isinstance(self.predictor, EmbeddingPredictor)
        return self.predictor.count_tokens(texts)


class RemotePredictor:
    """A classifier version served by its replicas, as the pool and the batch queue see a predictor."""

    run_parts = None
    inline_seconds = 0.0  # a remote call never runs on the event loop (a handle's `result()` must not)
    preferred_concurrency = 1
    scaling = Scaling()

    def __init__(self, version: ModelVersion, handle: Any, described: dict[str, Any], timeout_s: float) -> None:
        self.version = version
        self.handle = handle
        self.timeout_s = timeout_s
        self.memory_bytes: int = int(described["memory_bytes"])
        self.labels: tuple[str, ...] = tuple(described["labels"])
        self.embeds_images = bool(described.get("embeds_images"))  # its replicas answer ImageToEmbed items

    def run_batch(self, items: list[Any]) -> list[Any]:
        return list(self.handle.run.remote(items).result(timeout_s=self.timeout_s))


class RemoteEmbeddings(EmbeddingPredictor):
    """An embedding version served by its replicas: the embedding predictor's calls, each one a handle call."""

    run_parts = None  # type: ignore[assignment]
    inline_seconds = 0.0
    preferred_concurrency = 1
    scaling = Scaling()

    def __init__(self, version: ModelVersion, handle: Any, described: dict[str, Any], timeout_s: float) -> None:
        self.version = version
        self.handle = handle
        self.timeout_s = timeout_s
        self.labels = ()
        self.memory_bytes = int(described["memory_bytes"])
        self.dimensions = int(described["dimensions"])
        self.max_length = int(described["max_length"])

    def run_batch(self, items: list[Any]) -> list[Any]:
        return list(self.handle.run.remote(items).result(timeout_s=self.timeout_s))

    def check_lengths(self, texts: list[str]) -> None:
        found = self.handle.too_long.remote(texts).result(timeout_s=self.timeout_s)
        if found is not None:
            raise InputTooLong(*found)

    def count_tokens(self, texts: list[str]) -> int:
        return int(self.handle.count_tokens.remote(texts).result(timeout_s=self.timeout_s))


class RemoteGeneration:
    """One generation streamed from a replica, as the generation service reads a token stream."""

    def __init__(self, response: Any, version: ModelVersion) -> None:
        self.response = response  # a DeploymentResponseGenerator
        self.version = version
        self.completion_tokens = 0
        self._next: asyncio.Future[Any] | None = None
        self._ended = False

    async def next(self, timeout: float | None = None) -> TextDelta | GenerationDone | None:
        if self._ended:
            raise GenerationFailed("the stream has ended")
        if self._next is None:  # one read in flight across keep-alive timeouts: a timeout must not cancel it
            self._next = asyncio.ensure_future(self.response.__anext__())
        done, _ = await asyncio.wait({self._next}, timeout=timeout)
        if not done:
            return None
        pending, self._next = self._next, None
        try:
            event, self.completion_tokens = pending.result()
        except StopAsyncIteration:
            self._ended = True
            raise GenerationFailed("the replica ended the stream without a last event") from None
        except Exception as error:  # the replica died, or Ray could not reach it
            self._ended = True
            raise GenerationFailed(f"the replica failed: {type(error).__name__}: {error}") from None
        if isinstance(event, TextDelta):
            return event
        self._ended = True
        if isinstance(event, GenerationDone):
            return event
        name = f"{self.version.model}:{self.version.version}"
        if event[0] == "full":
            raise QueueFull(event[1], event[2], event[3])
        if event[0] == "closed":
            raise BatchQueueClosed(name)
        raise GenerationFailed(str(event[1]))

    def cancel(self) -> None:
        """Stop the replica's generation (Serve cancels its generator), off the event loop: cancelling may wait
        for the request's assignment to a replica."""
        if self._next is not None:
            self._next.cancel()
        if not self._ended:
            self._ended = True
            asyncio.get_running_loop().run_in_executor(None, self.response.cancel)


class RemoteGenerations:
    """A causal LM's replicas, as the pool holds the queue of its generations: each submit is a streaming call.
    The replicas queue and batch the generations; a full replica queue answers with the stream's first event."""

    depth = 0  # what waits is in the replicas' queues
    alive = True

    def __init__(self, version: ModelVersion, handle: Any) -> None:
        self.version = version
        self.stream = handle.options(stream=True)

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RemoteGeneration:
        return RemoteGeneration(self.stream.generate.remote(prompt_ids, params), self.version)

    async def close(self) -> None:
        """Nothing held here: the pool's unload hook deletes the Serve application."""


class RemoteGenerator:
    """A causal LM served by its replicas, as the pool sees a predictor: the prompt is encoded by a replica (its
    tokenizer and chat template), and the generations stream from them (`generations`)."""

    run_parts = None
    inline_seconds = 0.0
    preferred_concurrency = 1
    scaling = Scaling()

    def __init__(self, version: ModelVersion, handle: Any, described: dict[str, Any], timeout_s: float) -> None:
        self.version = version
        self.handle = handle
        self.timeout_s = timeout_s
        self.labels: tuple[str, ...] = ()
        self.memory_bytes = int(described["memory_bytes"])
        self.max_context = int(described["max_context"])
        self.generations = RemoteGenerations(version, handle)

    def run_batch(self, items: list[Any]) -> list[Any]:
        return list(items)  # the pool's warm-up: the replica warmed itself up

    def encode_prompt(self, chat: list[dict[str, str]] | None, prompt: str | None) -> list[int]:
        found = self.handle.encode_prompt.remote(chat, prompt).result(timeout_s=self.timeout_s)
        if isinstance(found, str):
            raise PromptRefused(found)
        return list(found)


Remote = RemotePredictor | RemoteEmbeddings | RemoteGenerator


def follow(remote: Remote, scaling: Scaling) -> None:
    """The remote predictor as its replicas now are: the pool's queue keeps a batch in flight per replica (the
    most that may run, under autoscaling)."""
    remote.scaling = scaling
    remote.preferred_concurrency = scaling.most
