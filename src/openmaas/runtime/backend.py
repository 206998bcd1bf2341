"""The inference backend: the one interface the services run models through (load, unload, classify, embed,
generate), answering with domain results. The local pool and batch queues (runtime/local.py) and Ray Serve
(runtime/ray_serve.py) stand behind it; the composition root picks one.

Generation is engine-neutral: a prompt becomes token ids (`encode_prompt`), the ids and the sampling options go
in (`generate`), text pieces and one end event come out of a `TokenStream`. Whatever decodes them (transformers
here, another engine later) is the backend's business.

Backends raise the runtime's own exceptions (`ModelLoadError`, `QueueFull`, `RequestTimedOut`, `RequestTooLarge`,
`BatchQueueClosed`, `InputTooLong`, `GenerationFailed`, `PromptRefused`, `UnsupportedFormat`); each service
turns them into its errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from openmaas.domain.entities import ModelVersion
from openmaas.domain.results import Classification, Embeddings
from openmaas.domain.scaling import Autoscaling, Scaling
from openmaas.recipes.base import InputTooLong
from openmaas.runtime.batching import BatchQueueClosed, QueueFull, RequestTimedOut, RequestTooLarge
from openmaas.runtime.constraints import OutputFormat, UnsupportedFormat, grammar_for
from openmaas.runtime.generation import GenerationFailed, PromptRefused, SamplingParams, TokenStream
from openmaas.runtime.pool import BatchSettings, ModelLoadError


@dataclass(frozen=True)
class LoadedModel:
    """What a loaded version is, as a caller needs to know it (its shape, its limits, its cost)."""

    version: ModelVersion
    memory_bytes: int
    load_seconds: float
    settings: BatchSettings
    labels: tuple[str, ...] = ()  # a classifier's class names, in the order of its probabilities
    dimensions: int | None = None  # an embedding model's vector size
    max_context: int | None = None  # a causal LM's context, prompt and completion together, in tokens
    onnx_path: Path | None = None  # the ONNX graph it runs in this process, if it runs one here
    embeds_images: bool = False  # an image classifier that also answers its pooled features (`embed_images`)
    scaling: Scaling = Scaling()  # the replicas serving it (one, in this process, on the embedded server)


class InferenceBackend(Protocol):
    async def load(
        self, version: ModelVersion, settings: BatchSettings | None = None, scaling: Scaling | None = None
    ) -> LoadedModel:
        """The version ready to serve (loaded now, once for concurrent callers, or already); `settings` other
        than those it runs with reload it with them; `scaling` other than its replicas re-scales it in place
        (a backend with one copy per version takes only `Scaling()`)."""
        ...

    def loaded(self, version: ModelVersion) -> LoadedModel | None: ...

    def unload(self, version: ModelVersion) -> None:
        """Drop the version; safe from any thread. Requests still waiting for it fail."""
        ...

    def waiting(self, version: ModelVersion) -> int:
        """Inputs (or generations) queued for the version and not yet running."""
        ...

    def stopped(self) -> list[str]:
        """Loaded versions (`model:version`) that no longer serve."""
        ...

    async def classify(self, version: ModelVersion, items: list[Any], timeout_s: float) -> Classification:
        """Class probabilities for texts (or decoded images), in the caller's order."""
        ...

    async def embed(self, version: ModelVersion, texts: list[str], timeout_s: float) -> Embeddings: ...

    async def embed_images(self, version: ModelVersion, images: list[Any], timeout_s: float) -> Embeddings:
        """An image model's pooled features of decoded images, L2-normalised, in the caller's order."""
        ...

    async def check_lengths(self, version: ModelVersion, texts: list[str]) -> None:
        """Raise InputTooLong for the first text over the embedding model's token limit."""
        ...

    async def count_tokens(self, version: ModelVersion, texts: list[str]) -> int:
        """The tokens `embed` would count for the texts (truncated as it truncates), without running the model."""
        ...

    async def encode_prompt(
        self, version: ModelVersion, *, chat: list[dict[str, str]] | None = None, prompt: str | None = None
    ) -> list[int]:
        """A chat (rendered with the model's template) or a plain prompt as the model's token ids."""
        ...

    async def generate(self, version: ModelVersion, prompt_ids: list[int], params: SamplingParams) -> TokenStream: ...

    async def close(self) -> None: ...


__all__ = [
    "Autoscaling",
    "BatchQueueClosed",
    "BatchSettings",
    "GenerationFailed",
    "InferenceBackend",
    "InputTooLong",
    "LoadedModel",
    "ModelLoadError",
    "OutputFormat",
    "PromptRefused",
    "QueueFull",
    "RequestTimedOut",
    "RequestTooLarge",
    "SamplingParams",
    "Scaling",
    "TokenStream",
    "UnsupportedFormat",
    "grammar_for",
]
