"""The local inference backend: the model pool and the queue in front of each loaded version (a batch queue, or
a generation queue for causal LMs). With a Ray Serve loader (runtime/ray_serve.py) the same pool and queues
front replicas on a cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from openmaas.domain.entities import ModelVersion
from openmaas.domain.results import Classification, Embeddings
from openmaas.domain.scaling import Scaling
from openmaas.runtime.adapters import AdapterPredictor
from openmaas.runtime.backend import LoadedModel
from openmaas.runtime.batching import BatchQueue, BatchQueueClosed
from openmaas.runtime.constraints import row_constraint
from openmaas.runtime.generation import GenerationQueue, Generations, SamplingParams, TokenStream
from openmaas.runtime.openvino_engine import OpenVinoEngine
from openmaas.runtime.pool import BatchSettings, ModelPool, ServedModel
from openmaas.runtime.predictors import EmbeddingPredictor, GenerativePredictor, ImageToEmbed


def described(served: ServedModel) -> LoadedModel:
    predictor = served.predictor
    return LoadedModel(
        version=served.version,
        memory_bytes=predictor.memory_bytes,
        load_seconds=served.load_seconds,
        settings=served.settings,
        labels=predictor.labels,
        dimensions=predictor.dimensions if isinstance(predictor, EmbeddingPredictor) else None,
        max_context=getattr(predictor, "max_context", None),
        onnx_path=getattr(getattr(predictor, "model", None), "onnx_path", None),
        embeds_images=bool(getattr(predictor, "embeds_images", False)),
        scaling=getattr(predictor, "scaling", Scaling()),  # a Serve deployment's replicas; here, this process
    )


class LocalBackend:
    """Runs versions through `pool`: loaded on first use, batched by their queues, evicted under its budget."""

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    async def load(
        self, version: ModelVersion, settings: BatchSettings | None = None, scaling: Scaling | None = None
    ) -> LoadedModel:
        if scaling is not None and not scaling.single:  # the service refuses it first: reaching here is a bug
            raise ValueError(f"{scaling.describe()}: this backend serves each version once, in this process")
        return described(await self._served(version, settings))

    async def _served(self, version: ModelVersion, settings: BatchSettings | None = None) -> ServedModel:
        if settings is not None and (served := self.pool.get(version)) and served.settings != settings:
            self.pool.unload_version(version)  # reload with the new batch settings
        return await self.pool.acquire(version, settings)

    def loaded(self, version: ModelVersion) -> LoadedModel | None:
        served = self.pool.get(version)
        return described(served) if served is not None else None

    def unload(self, version: ModelVersion) -> None:
        self.pool.unload_version(version)

    def waiting(self, version: ModelVersion) -> int:
        served = self.pool.get(version)
        return served.queue.depth if served is not None else 0

    def stopped(self) -> list[str]:
        return self.pool.stopped()

    async def classify(self, version: ModelVersion, items: list[Any], timeout_s: float) -> Classification:
        served = await self._served(version)
        rows = await self._run(served, items, timeout_s)
        return Classification(served.predictor.labels, np.stack(rows))

    async def embed(self, version: ModelVersion, texts: list[str], timeout_s: float) -> Embeddings:
        results = await self._run(await self._served(version), texts, timeout_s)
        vectors = np.stack([vector for vector, _ in results])
        return Embeddings(vectors, tuple(int(tokens) for _, tokens in results))

    async def embed_images(self, version: ModelVersion, images: list[Any], timeout_s: float) -> Embeddings:
        rows = await self._run(await self._served(version), [ImageToEmbed(image) for image in images], timeout_s)
        return Embeddings(np.stack(rows).astype(np.float32, copy=False), (0,) * len(images))

    async def _run(self, served: ServedModel, items: list[Any], timeout_s: float) -> list[Any]:
        """Run items through the version's batch queue. Many texts go in length order, so each batch pads
        little (transformers pad to the batch's longest text); results come back in the caller's order."""
        queue = served.queue
        assert isinstance(queue, BatchQueue)  # the services check the task first: never a causal LM's
        if len(items) <= 1 or not all(isinstance(item, str) for item in items):
            return await queue.submit(items, timeout=timeout_s)
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        ordered = await queue.submit([items[i] for i in order], timeout=timeout_s)
        results: list[Any] = [None] * len(items)
        for position, index in enumerate(order):
            results[index] = ordered[position]
        return results

    async def _embedder(self, version: ModelVersion) -> EmbeddingPredictor:
        predictor = (await self._served(version)).predictor
        assert isinstance(predictor, EmbeddingPredictor)
        return predictor

    async def check_lengths(self, version: ModelVersion, texts: list[str]) -> None:
        await asyncio.to_thread((await self._embedder(version)).check_lengths, texts)

    async def count_tokens(self, version: ModelVersion, texts: list[str]) -> int:
        return await asyncio.to_thread((await self._embedder(version)).count_tokens, texts)

    async def encode_prompt(
        self, version: ModelVersion, *, chat: list[dict[str, str]] | None = None, prompt: str | None = None
    ) -> list[int]:
        predictor: Any = (await self._served(version)).predictor  # a GenerativePredictor, or a remote one
        ids: list[int] = await asyncio.to_thread(predictor.encode_prompt, chat, prompt)
        return ids

    async def generate(self, version: ModelVersion, prompt_ids: list[int], params: SamplingParams) -> TokenStream:
        """Start the generation. A queue closed meanwhile (the model unloaded, or its decoding thread stopped,
        which drops it from the pool) is the pool's to replace: the version is acquired once more."""
        try:
            return await self._submit(version, prompt_ids, params)
        except BatchQueueClosed:
            return await self._submit(version, prompt_ids, params)

    async def _submit(self, version: ModelVersion, prompt_ids: list[int], params: SamplingParams) -> TokenStream:
        served = await self._served(version)
        queue = served.queue
        assert not isinstance(queue, BatchQueue)  # the services check the task first
        if isinstance(queue, OpenVinoEngine):  # its schema compiled and token table built off the event loop
            await asyncio.to_thread(queue.model.prepare, params)
        if not isinstance(queue, GenerationQueue):  # decoded elsewhere (a Serve replica), which constrains its own
            return queue.submit(prompt_ids, params)
        predictor = served.predictor
        assert isinstance(predictor, GenerativePredictor)
        constraint, table = None, None
        if params.output is not None or params.logprobs is not None:
            constraint, table = await asyncio.to_thread(row_constraint, predictor.causal_lm, params.output)
        adapter = predictor.adapter if isinstance(predictor, AdapterPredictor) else None
        return queue.submit(prompt_ids, params, constraint, table, adapter)

    async def _generations(self, version: ModelVersion) -> Generations:
        queue = (await self._served(version)).queue
        assert not isinstance(queue, BatchQueue)  # the services check the task first
        return queue

    async def close(self) -> None:
        await self.pool.close()
