"""Inference use cases: validate inputs, resolve the model version, run it through the inference backend."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from openmaas.data.images import ImageError, decode_image
from openmaas.domain.entities import ModelVersion, Principal
from openmaas.domain.results import Classification, Embeddings
from openmaas.domain.scaling import Scaling
from openmaas.errors import InvalidRequest, OpenMaaSError, PayloadTooLarge, RateLimited, Unavailable, Unprocessable
from openmaas.runtime.backend import (
    BatchQueueClosed,
    BatchSettings,
    InferenceBackend,
    InputTooLong,
    LoadedModel,
    ModelLoadError,
    QueueFull,
    RequestTimedOut,
    RequestTooLarge,
)
from openmaas.services.limits import RateLimiter, Reservation
from openmaas.services.registry import RegistryService, name_for
from openmaas.services.tasks import wrong_task
from openmaas.services.usage import UsageRecorder

RESOLVE_SECONDS = 1.0
SCALING_EMBEDDED = (
    "the embedded server runs each model once, in its own process; set OPENMAAS_CLUSTER to serve it on Ray Serve "
    "replicas"
)


R = TypeVar("R", Classification, Embeddings)


@dataclass(frozen=True)
class Answer(Generic[R]):
    """A served call's domain result, with what every protocol reports beside it."""

    model: str  # as the caller writes it (`owner/name` for another tenant's): in usage and in the response
    version: ModelVersion
    result: R
    rate_limit: dict[str, str]  # the tokens budget after this call, as x-ratelimit-*-tokens values


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


# The pixels one predict request may decode, all its images together: 4 images at the per-image limit. Without
# it, 2,048 small PNGs of 5000 x 5000 one-colour pixels (a few KB each) would decode to 150 GB.
IMAGES_PER_REQUEST_AT_THE_LIMIT = 4


def decode_images(images: list[bytes], max_pixels: int) -> list[np.ndarray]:
    """Each image decoded to RGB, or a 400 naming the first bad one's index: before any shared batch. The
    request's images together decode to at most IMAGES_PER_REQUEST_AT_THE_LIMIT x max_pixels, else 413."""
    limit = IMAGES_PER_REQUEST_AT_THE_LIMIT * max_pixels
    budget = limit
    decoded = []
    for index, data in enumerate(images):
        try:
            image = decode_image(data, max_pixels)
        except ImageError as error:
            raise InvalidRequest(f"inputs[{index}]: {error}", param=f"inputs.{index}", code=error.code) from None
        budget -= image.shape[0] * image.shape[1]
        if budget < 0:
            raise PayloadTooLarge(
                f"inputs[{index}]: the request's images decode to more than {limit} pixels together; send fewer "
                "or smaller images per request",
                param=f"inputs.{index}",
                code="images_too_large",
            )
        decoded.append(image)
    return decoded


def load_failed(version: ModelVersion, error: ModelLoadError) -> Unavailable:
    """A version that could not be loaded: 503, with Retry-After when waiting helps (a cluster with no room)."""
    if error.retry_after is not None:
        retry = str(max(1, math.ceil(error.retry_after)))
        return Unavailable(
            f"model {version.model}:{version.version} cannot be served yet: {error}; retry after {retry}s",
            param="model",
            code="model_not_placed",
            headers={"Retry-After": retry},
        )
    return Unavailable(
        f"model {version.model}:{version.version} could not be loaded: {error}",
        param="model",
        code="model_load_failed",
    )


def at_capacity(version: ModelVersion, error: QueueFull, waiting: str) -> RateLimited:
    """A full queue's answer: 429 at once, with how long to wait."""
    retry = str(max(1, math.ceil(error.retry_after)))
    return RateLimited(
        f"model {version.model}:{version.version} is at capacity ({error.queued} {waiting}); retry after {retry}s",
        code="queue_full",
        headers={"Retry-After": retry},
    )


class InferenceService:
    def __init__(
        self,
        registry: RegistryService,
        backend: InferenceBackend,
        *,
        max_inputs: int,
        limiter: RateLimiter,
        usage: UsageRecorder,
        request_timeout_s: float = 60.0,
        max_image_pixels: int = 25_000_000,
        scaling_refused: str | None = SCALING_EMBEDDED,
    ) -> None:
        self.scaling_refused = scaling_refused  # why a version cannot have more than one copy here (None: it can)
        self.max_image_pixels = max_image_pixels
        self.limiter = limiter
        self.usage = usage
        self.registry = registry
        self.backend = backend
        self.max_inputs = max_inputs
        self.request_timeout_s = request_timeout_s
        self._resolved: dict[tuple[str, str], tuple[ModelVersion, float]] = {}
        # Called with each reference that resolved (the caller, its version, the reference): the API's metrics
        # take a request's model label from it, so only registered names become labels.
        self.on_resolve: list[Callable[[Principal, ModelVersion, str], None]] = []
        registry.on_version_deleted.append(backend.unload)
        registry.on_change.append(self._resolved.clear)

    async def resolve(self, principal: Principal, ref: str) -> ModelVersion:
        """Resolve a reference, remembered for RESOLVE_SECONDS: the hot path skips the registry's queries.

        Changes made through this process clear the memory at once; a version registered by a training
        worker becomes what `name` means within RESOLVE_SECONDS.
        """
        key = (principal.tenant_id, ref)
        hit = self._resolved.get(key)
        if hit is not None and hit[1] > time.monotonic():
            version = hit[0]
        else:
            version = await asyncio.to_thread(self.registry.resolve, principal, ref)
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            self._resolved[key] = (version, time.monotonic() + RESOLVE_SECONDS)
        for hook in self.on_resolve:
            hook(principal, version, ref)
        return version

    async def until_idle(
        self, principal: Principal, ref: Any, *, poll_s: float = 0.005, max_wait_s: float = 30.0
    ) -> None:
        """Wait while requests wait in the queue of the model `ref` names: a batch request goes in only behind
        nothing, so online requests never queue behind a batch (at most behind the one batch request running).
        After `max_wait_s` of unbroken online load it goes in anyway, so a batch still moves."""
        if not isinstance(ref, str):
            return  # the request itself will name the problem
        try:
            version = await self.resolve(principal, ref)
        except OpenMaaSError:
            return
        deadline = time.monotonic() + max_wait_s
        while self.backend.waiting(version) > 0:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(poll_s)

    async def acquire(self, version: ModelVersion, settings: BatchSettings | None = None) -> LoadedModel:
        """The version loaded (or a 503: it could not be, or not now)."""
        try:
            return await self.backend.load(version, settings)
        except ModelLoadError as error:
            raise load_failed(version, error) from None

    async def load(
        self, principal: Principal, ref: str, settings: BatchSettings | None, scaling: Scaling | None = None
    ) -> LoadedModel:
        """Load the version now, with batch settings and (on a cluster) its replicas: a version served with
        others is re-scaled in place. `None` keeps what a loaded version has."""
        if scaling is not None and not scaling.single and self.scaling_refused is not None:
            raise Unprocessable(
                f"{scaling.describe()} needs a cluster: {self.scaling_refused}",
                param="replicas" if scaling.autoscaling is None else "autoscaling",
                code="replicas_need_a_cluster",
            )
        version = await asyncio.to_thread(self.registry.resolve, principal, ref)  # the database: off the loop
        try:
            return await self.backend.load(version, settings, scaling)
        except ModelLoadError as error:
            raise load_failed(version, error) from None

    def unload(self, principal: Principal, ref: str) -> ModelVersion:
        version = self.registry.resolve(principal, ref)
        self.backend.unload(version)
        return version

    async def _classify(self, version: ModelVersion, items: list[Any]) -> Classification:
        async with self._backend_errors(version):
            return await self.backend.classify(version, items, self.request_timeout_s)

    async def _embed(self, version: ModelVersion, texts: list[str]) -> Embeddings:
        async with self._backend_errors(version):
            return await self.backend.embed(version, texts, self.request_timeout_s)

    @asynccontextmanager
    async def _backend_errors(self, version: ModelVersion) -> AsyncIterator[None]:
        """The backend's failures of one call, as this caller's errors."""
        try:
            yield
        except ModelLoadError as error:
            raise load_failed(version, error) from None
        except QueueFull as error:
            raise at_capacity(version, error, "inputs queued") from None
        except RequestTimedOut:
            raise Unavailable(
                f"the request took longer than {self.request_timeout_s:g}s waiting for "
                f"{version.model}:{version.version}; retry later or send fewer inputs",
                code="timeout",
            ) from None
        except RequestTooLarge as error:
            raise InvalidRequest(
                f"too many inputs for {version.model}: {error}", param="inputs", code="too_many_inputs"
            ) from None
        except BatchQueueClosed:
            raise Unavailable(
                f"model {version.model}:{version.version} was unloaded while the request waited",
                code="model_unloaded",
            ) from None

    async def _resolve_for(self, principal: Principal, ref: str, task: str, route: str) -> ModelVersion:
        version = await self.resolve(principal, ref)
        if version.task != task:
            raise wrong_task(ref, version.task, route)
        return version

    async def predict(
        self, principal: Principal, ref: str, inputs: Any, *, protocol: str = "native"
    ) -> Answer[Classification]:
        texts = check_texts(inputs, "inputs", self.max_inputs)
        version = await self._resolve_for(principal, ref, "text-classification", "POST /v1/models/{ref}/predict")
        # A classifier's budget counts inputs ("items"): the tokenizer of a bag-of-words model is ours, not a
        # billing unit.
        reservation = await self.limiter.reserve_tokens(principal, len(texts))
        started = time.perf_counter()
        try:
            classification = await self._classify(version, texts)
        except BaseException:
            await self.limiter.refund_failed(reservation)
            raise
        model = name_for(principal, version, ref)
        await self._meter(principal, model, version, len(texts), len(texts), started, protocol)
        return Answer(model, version, classification, reservation.headers)

    def _check_images(self, images: list[bytes]) -> None:
        if not images:
            raise InvalidRequest("inputs must be a non-empty list of images", param="inputs")
        if len(images) > self.max_inputs:
            raise InvalidRequest(
                f"too many inputs: {len(images)} > {self.max_inputs} per request",
                param="inputs",
                code="too_many_inputs",
            )

    async def _run_images(
        self, principal: Principal, version: ModelVersion, images: list[bytes], embed: bool
    ) -> tuple[Classification | Embeddings, Reservation]:
        """Decode the images here, so a bad one is this caller's 400 and never reaches a batch shared with
        others; then run them through the model's batch queue, to classify or to embed."""
        decoded = await asyncio.to_thread(decode_images, images, self.max_image_pixels)
        reservation = await self.limiter.reserve_tokens(principal, len(images))
        try:
            if not embed:
                return await self._classify(version, decoded), reservation
            if not (await self.acquire(version)).embeds_images:
                raise InvalidRequest(
                    f"model {version.model}:{version.version} ({version.recipe}) gives no image embeddings; "
                    "image-classifier versions and the foundation model efficientnet-lite0 do",
                    param="model",
                    code="no_image_embeddings",
                )
            async with self._backend_errors(version):
                return await self.backend.embed_images(version, decoded, self.request_timeout_s), reservation
        except BaseException:
            await self.limiter.refund_failed(reservation)
            raise

    async def predict_images(
        self, principal: Principal, ref: str, images: list[bytes], *, protocol: str = "native"
    ) -> Answer[Classification]:
        """Classify encoded images (PNG, JPEG, WebP, GIF); the model resizes and normalises them as it was
        trained."""
        self._check_images(images)
        route = "POST /v1/models/{ref}/predict with images"
        version = await self._resolve_for(principal, ref, "image-classification", route)
        started = time.perf_counter()
        classification, reservation = await self._run_images(principal, version, images, embed=False)
        assert isinstance(classification, Classification)
        model = name_for(principal, version, ref)
        await self._meter(principal, model, version, len(images), len(images), started, protocol)
        return Answer(model, version, classification, reservation.headers)

    async def embed_images(
        self, principal: Principal, ref: str, images: list[bytes], *, protocol: str = "native"
    ) -> Answer[Embeddings]:
        """Each image's embedding: an image classifier's pooled features, L2-normalised (1280 numbers for
        EfficientNet-Lite0), through the same batch queue, limits and metering as its predictions."""
        self._check_images(images)
        version = await self._resolve_for(principal, ref, "image-classification", "POST /v1/models/{ref}/embed")
        started = time.perf_counter()
        embeddings, reservation = await self._run_images(principal, version, images, embed=True)
        assert isinstance(embeddings, Embeddings)
        model = name_for(principal, version, ref)
        await self._meter(principal, model, version, len(images), len(images), started, protocol)
        return Answer(model, version, embeddings, reservation.headers)

    async def _meter(
        self,
        principal: Principal,
        model: str,
        version: ModelVersion,
        items: int,
        tokens: int,
        started: float,
        protocol: str,
    ) -> None:
        await self.usage.record(
            principal,
            model=model,
            version=version.version,
            items=items,
            tokens=tokens if version.task == "embeddings" else 0,
            seconds=time.perf_counter() - started,
            protocol=protocol,
        )

    async def embed(
        self,
        principal: Principal,
        ref: str,
        inputs: Any,
        *,
        truncate: bool = True,
        dimensions: int | None = None,
        protocol: str = "openai",
    ) -> Answer[Embeddings]:
        texts = check_texts(inputs, "input", self.max_inputs, allow_single=True, allow_empty=False)
        version = await self._resolve_for(principal, ref, "embeddings", "POST /v1/embeddings")
        await self.limiter.check_tokens(principal)
        started = time.perf_counter()
        loaded = await self.acquire(version)
        size = loaded.dimensions or 0
        if dimensions is not None and not 1 <= dimensions <= size:
            raise InvalidRequest(
                f"dimensions must be between 1 and {size} for {version.model}",
                param="dimensions",
                code="invalid_dimensions",
            )
        if not truncate:
            try:
                async with self._backend_errors(version):
                    await self.backend.check_lengths(version, texts)
            except InputTooLong as error:
                raise InvalidRequest(
                    f"input[{error.index}] has {error.tokens} tokens, over the limit of {error.max_length} for "
                    f"{version.model}; shorten it or allow truncation",
                    param=f"input.{error.index}",
                    code="input_too_long",
                ) from None
        # The tokens the model will count (truncated, as it embeds them), counted first when a budget applies.
        counted = 0
        if self.limiter.limits_tokens(principal):
            async with self._backend_errors(version):
                counted = await self.backend.count_tokens(version, texts)
        reservation = await self.limiter.reserve_tokens(principal, counted)
        try:
            embeddings = await self._embed(version, texts)
        except BaseException:
            await self.limiter.refund_failed(reservation)
            raise
        if dimensions is not None and dimensions < size:
            # Shortened like OpenAI's `dimensions`: keep the leading components, then renormalise.
            vectors = embeddings.vectors[:, :dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            embeddings = Embeddings(vectors, embeddings.tokens)
        model = name_for(principal, version, ref)
        await self._meter(principal, model, version, len(texts), embeddings.prompt_tokens, started, protocol)
        return Answer(model, version, embeddings, reservation.headers)
