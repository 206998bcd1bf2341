"""Inference use cases: validate inputs, resolve the model version, run it through the serving pool."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openmaas.domain.entities import ModelVersion, Principal
from openmaas.errors import InvalidRequest, Unavailable
from openmaas.runtime.pool import ModelLoadError, ModelPool
from openmaas.runtime.predictors import Predictor
from openmaas.services.registry import RegistryService


@dataclass(frozen=True)
class Prediction:
    version: ModelVersion
    predictions: list[dict[str, Any]]


class InferenceService:
    def __init__(self, registry: RegistryService, pool: ModelPool, *, max_inputs: int) -> None:
        self.registry = registry
        self.pool = pool
        self.max_inputs = max_inputs
        registry.on_version_deleted.append(pool.unload_version)

    def check_inputs(self, inputs: Any) -> Sequence[str]:
        if not isinstance(inputs, list) or not inputs:
            raise InvalidRequest("inputs must be a non-empty list of strings", param="inputs")
        if len(inputs) > self.max_inputs:
            raise InvalidRequest(
                f"too many inputs: {len(inputs)} > {self.max_inputs} per request",
                param="inputs",
                code="too_many_inputs",
            )
        for index, text in enumerate(inputs):
            if not isinstance(text, str):
                raise InvalidRequest(
                    f"inputs[{index}] must be a string, not {type(text).__name__}", param=f"inputs.{index}"
                )
        return inputs

    async def acquire(self, version: ModelVersion) -> Predictor:
        try:
            return await self.pool.acquire(version)
        except ModelLoadError as error:
            raise Unavailable(
                f"model {version.model}:{version.version} could not be loaded: {error}",
                param="model",
                code="model_load_failed",
            ) from None

    async def predict(self, principal: Principal, ref: str, inputs: Any) -> Prediction:
        texts = self.check_inputs(inputs)
        version = self.registry.resolve(principal, ref)
        predictor = await self.acquire(version)
        predictions = await asyncio.to_thread(predictor.predict, texts)
        return Prediction(version, predictions)
