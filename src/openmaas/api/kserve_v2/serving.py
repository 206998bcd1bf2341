"""The v2 use cases both transports share (REST and gRPC): a model's metadata and readiness from the registry,
the repository index, load and unload, and inference through the same services (keys, tenancy, limits, usage,
the model's batch queue) as the native and OpenAI routes. Errors are the services' own; each transport
renders them its way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from openmaas import __version__
from openmaas.api.deps import Services
from openmaas.api.kserve_v2.tensors import Tensor, input_name, output_names, outputs_of, signature
from openmaas.domain.entities import ModelVersion, Principal
from openmaas.errors import InvalidRequest
from openmaas.protocol.kserve_v2 import (
    ModelMetadataResponse,
    RepositoryIndexEntry,
    ServerMetadataResponse,
)
from openmaas.services.registry import reference_for

EXTENSIONS = ["binary_tensor_data", "model_repository"]


def server_metadata() -> ServerMetadataResponse:
    return ServerMetadataResponse(name="openmaas", version=__version__, extensions=EXTENSIONS)


def reference(name: str, version: str | None) -> str:
    """Our model reference for v2's name and version: `name:3`, or `name` (its latest version)."""
    if version is None or version == "":
        return name
    if not (version.isascii() and version.isdigit()):
        raise InvalidRequest(f"model version {version!r} is not a version number")
    return f"{name}:{version}"


@dataclass(frozen=True)
class Given:
    """The request's one input: texts (UTF-8 elements) or images (their encoded bytes)."""

    name: str
    elements: list[bytes] | list[str]

    def texts(self) -> list[str]:
        return [element for element in self.elements if isinstance(element, str)]

    def images(self) -> list[bytes]:
        return [element for element in self.elements if isinstance(element, bytes)]


@dataclass(frozen=True)
class Inferred:
    version: ModelVersion
    outputs: dict[str, Tensor]  # the requested outputs, in the order asked for
    rate_limit: dict[str, str]


class V2Models:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def resolve(self, caller: Principal, name: str, version: str | None) -> ModelVersion:
        return await self.services.inference.resolve(caller, reference(name, version))

    async def metadata(self, caller: Principal, name: str, version: str | None) -> ModelMetadataResponse:
        resolved = await self.resolve(caller, name, version)
        model = await asyncio.to_thread(self.services.registry.get, caller, name)
        inputs, outputs = signature(resolved)
        return ModelMetadataResponse(
            name=name,
            versions=[str(v.version) for v in model.versions],
            platform=f"openmaas_{resolved.runtime}",
            inputs=inputs,
            outputs=outputs,
            parameters={"task": resolved.task, "recipe": resolved.recipe, "version": resolved.version},
        )

    async def ready(self, caller: Principal, name: str, version: str | None) -> bool:
        """A registered version is ready: the pool loads it on its first request (an unknown one is a 404)."""
        resolved = await self.resolve(caller, name, version)
        signature(resolved)  # a generative model is no v2 model: 400
        return True

    async def infer(
        self,
        caller: Principal,
        name: str,
        version: str | None,
        given: Given,
        wanted: list[str] | None,
        protocol: str,
    ) -> Inferred:
        """`protocol` ("kserve_v2" or "kserve_v2_grpc") goes on the call's usage record."""
        ref = reference(name, version)
        resolved = await self.services.inference.resolve(caller, ref)
        names = output_names(resolved)
        expected = input_name(resolved)
        if given.name != expected:
            raise InvalidRequest(f"model {name!r} takes the input {expected!r} (BYTES), not {given.name!r}")
        for output in wanted or ():
            if output not in names:
                raise InvalidRequest(f"unknown output {output!r}: the model gives {', '.join(names)}")
        inference = self.services.inference
        if resolved.task == "image-classification":
            images = given.images()
            predicted = await inference.predict_images(caller, ref, images, protocol=protocol)
            tensors, rate_limit = outputs_of(predicted.result), predicted.rate_limit
        elif resolved.task == "embeddings":
            embedded = await inference.embed(caller, ref, given.texts(), protocol=protocol)
            tensors, rate_limit = outputs_of(embedded.result), embedded.rate_limit
        else:
            predicted = await inference.predict(caller, ref, given.texts(), protocol=protocol)
            tensors, rate_limit = outputs_of(predicted.result), predicted.rate_limit
        return Inferred(resolved, {output: tensors[output] for output in wanted or names}, rate_limit)

    def index(self, caller: Principal, ready_only: bool) -> list[RepositoryIndexEntry]:
        """Every model the caller can read, at its latest version: READY once loaded, else UNAVAILABLE."""
        entries = []
        backend = self.services.inference.backend
        for model in self.services.registry.list(caller):
            latest = model.latest
            if latest is None or latest.task == "text-generation":
                continue
            loaded = backend.loaded(latest) is not None
            if ready_only and not loaded:
                continue
            entries.append(
                RepositoryIndexEntry(
                    name=reference_for(caller, model),
                    version=str(latest.version),
                    state="READY" if loaded else "UNAVAILABLE",
                    reason="" if loaded else "not loaded: loads on its first request or on load",
                )
            )
        return entries

    async def load(self, caller: Principal, name: str) -> None:
        await self.services.inference.load(caller, name, None)

    def unload(self, caller: Principal, name: str) -> None:
        self.services.inference.unload(caller, name)
