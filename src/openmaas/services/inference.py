"""Inference use cases: validate inputs, resolve the model version, run it through the serving pool."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from openmaas.domain.entities import ModelVersion, Principal
from openmaas.errors import InvalidRequest, Unavailable
from openmaas.recipes.base import InputTooLong
from openmaas.runtime.pool import ModelLoadError, ModelPool
from openmaas.runtime.predictors import ClassifierPredictor, EmbeddingPredictor, Predictor
from openmaas.services.registry import RegistryService


@dataclass(frozen=True)
class Prediction:
    version: ModelVersion
    predictions: list[dict[str, Any]]


@dataclass(frozen=True)
class Embeddings:
    version: ModelVersion
    vectors: np.ndarray
    prompt_tokens: int


def check_texts(
    inputs: Any, param: str, limit: int, *, allow_single: bool = False, allow_empty: bool = True
) -> list[str]:
    if allow_single and isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        kind = "a string or a non-empty list of strings" if allow_single else "a non-empty list of strings"
        raise InvalidRequest(f"{param} must be {kind}", param=param)
    if len(inputs) > limit:
        raise InvalidRequest(
            f"too many inputs: {len(inputs)} > {limit} per request", param=param, code="too_many_inputs"
        )
    for index, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidRequest(
                f"{param}[{index}] must be a string, not {type(text).__name__}", param=f"{param}.{index}"
            )
        if not allow_empty and not text:
            raise InvalidRequest(f"{param}[{index}] is an empty string", param=f"{param}.{index}")
    return inputs


class InferenceService:
    def __init__(self, registry: RegistryService, pool: ModelPool, *, max_inputs: int) -> None:
        self.registry = registry
        self.pool = pool
        self.max_inputs = max_inputs
        registry.on_version_deleted.append(pool.unload_version)

    async def acquire(self, version: ModelVersion) -> Predictor:
        try:
            return await self.pool.acquire(version)
        except ModelLoadError as error:
            raise Unavailable(
                f"model {version.model}:{version.version} could not be loaded: {error}",
                param="model",
                code="model_load_failed",
            ) from None

    def _resolve_for(self, principal: Principal, ref: str, task: str, hint: str) -> ModelVersion:
        version = self.registry.resolve(principal, ref)
        if version.task != task:
            raise InvalidRequest(f"model {ref!r} is a {version.task} model; {hint}", param="model", code="wrong_task")
        return version

    async def predict(self, principal: Principal, ref: str, inputs: Any) -> Prediction:
        texts = check_texts(inputs, "inputs", self.max_inputs)
        version = self._resolve_for(principal, ref, "text-classification", "use POST /v1/embeddings for it")
        predictor = await self.acquire(version)
        assert isinstance(predictor, ClassifierPredictor)
        predictions = await asyncio.to_thread(predictor.predict, texts)
        return Prediction(version, predictions)

    async def embed(
        self, principal: Principal, ref: str, inputs: Any, *, truncate: bool = True, dimensions: int | None = None
    ) -> Embeddings:
        texts = check_texts(inputs, "input", self.max_inputs, allow_single=True, allow_empty=False)
        version = self._resolve_for(principal, ref, "embeddings", "it answers POST /v1/models/{ref}/predict")
        predictor = await self.acquire(version)
        assert isinstance(predictor, EmbeddingPredictor)
        if dimensions is not None and not 1 <= dimensions <= predictor.dimensions:
            raise InvalidRequest(
                f"dimensions must be between 1 and {predictor.dimensions} for {version.model}",
                param="dimensions",
                code="invalid_dimensions",
            )
        try:
            vectors, tokens = await asyncio.to_thread(predictor.embed, texts, truncate)
        except InputTooLong as error:
            raise InvalidRequest(
                f"input[{error.index}] has {error.tokens} tokens, over the limit of {error.max_length} for "
                f"{version.model}; shorten it or allow truncation",
                param=f"input.{error.index}",
                code="input_too_long",
            ) from None
        if dimensions is not None and dimensions < predictor.dimensions:
            # Shortened like OpenAI's `dimensions`: keep the leading components, then renormalise.
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return Embeddings(version, vectors, int(sum(tokens)))
