"""Predictors: a loaded model version behind one batched call (`run_batch`), giving class probabilities, embeddings
or generated text; results are domain values (numpy rows, domain.results), never a wire shape."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from openmaas.domain.entities import ModelVersion
from openmaas.recipes import get_loader
from openmaas.recipes.base import resolve_device
from openmaas.recipes.generative import CausalLM, load_causal_lm
from openmaas.recipes.gguf import GGUF_FILE
from openmaas.runtime.batching import BatchStats, Deliver
from openmaas.runtime.engines import OPENVINO, GenerationEngine, TextModel
from openmaas.runtime.generation import GenerationQueue, PromptRefused

if TYPE_CHECKING:  # imported when a version is served by it: openvino loads ~100 MB of libraries
    from openmaas.runtime.openvino_engine import OpenVinoModel


class Predictor(Protocol):
    """A loaded version. `run_batch` is what the batch queue calls: one item in, one result out, in order."""

    version: ModelVersion
    memory_bytes: int
    labels: tuple[str, ...]  # the class names a classifier's rows follow; empty for other models

    # For a model that runs a batch as several forward passes: `run_parts(items, deliver)` hands each pass's
    # (positions, results) to `deliver` as it ends, so the queue answers those requests at once. None otherwise.
    @property
    def run_parts(self) -> Callable[[list[Any], Deliver], None] | None: ...

    def run_batch(self, items: list[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class ImageToEmbed:
    """A batch item asking an image classifier for the image's embedding instead of its class probabilities."""

    image: np.ndarray  # RGB uint8 (H, W, 3)


class ClassifierPredictor:
    """Class probabilities: one row per text or image (the batch queue's unit), in the order of `labels`. A model
    with `embed(images)` (an image-classifier version) also answers an `ImageToEmbed` item with its L2-normalised
    features: a batch's images to classify and its images to embed each go through the network stacked as one."""

    def __init__(self, version: ModelVersion, model: Any) -> None:
        self.version = version
        self.model = model
        self.labels = tuple(model.labels)
        self.embeds_images: bool = callable(getattr(model, "embed", None)) and version.task == "image-classification"
        self.warm_up_input: Any = getattr(model, "warm_up_input", "warm-up")
        self.memory_bytes: int = model.memory_bytes
        self.preferred_batch_size: int | None = getattr(model, "preferred_batch_size", None)
        self.preferred_concurrency: int = getattr(model, "preferred_concurrency", 1)
        self.run_parts: Callable[[list[Any], Deliver], None] | None = (
            self._run_parts if "on_part" in inspect.signature(model.predict_proba).parameters else None
        )

    def run_batch(self, items: list[Any]) -> list[Any]:
        if not any(isinstance(item, ImageToEmbed) for item in items):
            return list(self.model.predict_proba(items))
        if not self.embeds_images:
            raise ValueError(f"{self.version.model}:{self.version.version} gives no image embeddings")
        results: list[Any] = [None] * len(items)
        to_embed = [i for i, item in enumerate(items) if isinstance(item, ImageToEmbed)]
        to_classify = [i for i, item in enumerate(items) if not isinstance(item, ImageToEmbed)]
        if to_classify:
            for index, row in zip(to_classify, self.model.predict_proba([items[i] for i in to_classify]), strict=True):
                results[index] = row
        for index, vector in zip(to_embed, self.model.embed([items[i].image for i in to_embed]), strict=True):
            results[index] = vector
        return results

    def _run_parts(self, items: list[Any], deliver: Deliver) -> None:
        if any(isinstance(item, ImageToEmbed) for item in items):
            deliver(range(len(items)), self.run_batch(items))
            return
        self.model.predict_proba(items, on_part=lambda positions, rows: deliver(positions, list(rows)))


class EmbeddingPredictor:
    """L2-normalised sentence embeddings and the number of tokens each input used."""

    def __init__(self, version: ModelVersion, model: Any) -> None:
        self.version = version
        self.model = model
        self.labels: tuple[str, ...] = ()
        self.dimensions: int = model.dimensions
        self.max_length: int = model.max_length
        self.memory_bytes: int = model.memory_bytes
        self.preferred_batch_size: int | None = getattr(model, "preferred_batch_size", None)
        self.preferred_concurrency: int = getattr(model, "preferred_concurrency", 1)

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[np.ndarray, list[int]]:
        vectors, tokens = self.model.embed(texts, truncate=truncate)
        return vectors, tokens

    def check_lengths(self, texts: list[str]) -> None:
        """Raise InputTooLong for the first text over the token limit (for callers that refuse truncation)."""
        self.model.tokenizer(texts, truncate=False)

    def count_tokens(self, texts: list[str]) -> int:
        """The tokens the texts take once truncated, as `embed` counts them, without running the model."""
        return int(sum(self.model.tokenizer.count(texts)))

    def run_batch(self, items: list[Any]) -> list[Any]:
        """Each item is a text; each result is (vector, token count)."""
        vectors, tokens = self.model.embed(items, truncate=True)
        return list(zip(vectors, tokens, strict=True))

    def run_parts(self, items: list[Any], deliver: Deliver) -> None:
        def part(positions: Sequence[int], vectors: np.ndarray, tokens: list[int]) -> None:
            deliver(positions, list(zip(vectors, tokens, strict=True)))

        self.model.embed(items, truncate=True, on_part=part)


class GenerativePredictor:
    """A causal language model on the torch engine. It is served by a GenerationQueue (`start_engine`);
    `run_batch` (one greedy token per prompt) is only the pool's warm-up."""

    def __init__(self, version: ModelVersion, model: CausalLM) -> None:
        self.version = version
        self.model: TextModel = model
        self.causal_lm = model
        self.memory_bytes: int = model.memory_bytes
        self.max_context: int = model.max_context
        self.labels: tuple[str, ...] = ()
        self.run_parts: Callable[[list[Any], Deliver], None] | None = None

    def encode_prompt(self, chat: list[dict[str, str]] | None, prompt: str | None) -> list[int]:
        if chat is None:
            return self.model.encode(prompt or "", chat=False)
        try:
            text = self.model.render_chat(chat)
        except Exception as error:  # a template's own check (e.g. roles out of order) names the problem
            raise PromptRefused(str(error)) from None
        return self.model.encode(text, chat=True)

    def _engine(self) -> tuple[Callable[..., GenerationEngine], Any]:
        """The engine that decodes for this predictor and the model it is given: here, the torch engine."""
        return GenerationQueue, self.causal_lm

    def start_engine(
        self,
        *,
        max_queue_size: int,
        max_batch_size: int,
        name: str,
        stats: BatchStats | None,
        on_stopped: Callable[[], None] | None,
    ) -> GenerationEngine:
        engine, model = self._engine()
        return engine(
            model,
            max_queue_size=max_queue_size,
            max_batch_size=max_batch_size,
            name=name,
            stats=stats,
            on_stopped=on_stopped,
        )

    def run_batch(self, items: list[Any]) -> list[Any]:
        import torch

        out = []
        with torch.inference_mode():
            for text in items:
                logits, _ = self.causal_lm.prefill(self.causal_lm.encode(text, chat=False))
                out.append(self.causal_lm.decode([int(torch.argmax(logits))]))
        return out


class OpenVinoPredictor(GenerativePredictor):
    """A GGUF causal LM on the OpenVINO engine (continuous batching in the library's pipeline)."""

    def __init__(self, version: ModelVersion, model: OpenVinoModel) -> None:
        self.version = version
        self.model = model
        self.openvino_model = model
        self.memory_bytes = model.memory_bytes
        self.max_context = model.max_context
        self.labels = ()
        self.run_parts = None

    def _engine(self) -> tuple[Callable[..., GenerationEngine], Any]:
        from openmaas.runtime.openvino_engine import OpenVinoEngine

        return OpenVinoEngine, self.openvino_model

    def run_batch(self, items: list[Any]) -> list[Any]:
        return [self.openvino_model.warm_up() for _ in items]


def load_predictor(version: ModelVersion, directory: Path, device: str) -> Predictor:
    if version.task == "text-generation":  # the version's runtime names its engine (runtime/engines.py)
        if version.runtime == OPENVINO:
            from openmaas.runtime.openvino_engine import load_openvino_model

            return OpenVinoPredictor(version, load_openvino_model(directory / GGUF_FILE))
        return GenerativePredictor(version, load_causal_lm(directory, resolve_device(device)))
    model = get_loader(version.recipe).load(directory, resolve_device(device), version.runtime)
    if version.task == "embeddings":
        return EmbeddingPredictor(version, model)
    return ClassifierPredictor(version, model)
