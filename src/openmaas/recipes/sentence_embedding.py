"""Loader `sentence-embedding`: serves a Hugging Face encoder directory as L2-normalised mean-pooled embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from openmaas.recipes.encoders import (
    Batch,
    SentenceEncoder,
    ServedGraph,
    TextTokenizer,
    accepts_token_types,
    chunk_size,
    concurrent_batches,
    in_length_buckets,
    in_token_groups,
    load_encoder,
    read_max_length,
)

ONNX_FILE = "openmaas-embeddings.onnx"

# (input positions, their embeddings, their token counts) as each forward pass ends.
OnEmbedded = Callable[[Sequence[int], np.ndarray, list[int]], None]


class EmbeddingInference:
    """Embeddings for a batch of texts, with ONNX Runtime (`onnx`) or PyTorch (`torch`)."""

    preferred_batch_size = 32

    def __init__(self, directory: Path, device: str, runtime: str, onnx_path: Path | None = None) -> None:
        encoder = load_encoder(directory)
        uses_token_types = accepts_token_types(encoder)
        self.max_length = read_max_length(directory)
        self.dimensions = int(encoder.config.hidden_size)
        self.tokenizer = TextTokenizer(directory, self.max_length, uses_token_types)
        self.runtime = runtime
        self.device = device
        self.labels: tuple[str, ...] = ()
        sentence = SentenceEncoder(encoder, uses_token_types)
        self.graph = ServedGraph(
            sentence, uses_token_types, "embeddings", runtime, device, onnx_path or directory / ONNX_FILE
        )
        self.memory_bytes = self.graph.memory_bytes
        self.onnx_path = self.graph.onnx_path
        self.chunk = chunk_size(device)
        self.preferred_concurrency = concurrent_batches(device)

    def embed_sorted(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed many texts in batches of similar length, so little compute goes to padding."""
        return in_length_buckets(texts, lambda chunk: self._embed(self.tokenizer(chunk)), batch_size)

    def embed(
        self, texts: list[str], *, truncate: bool = True, on_part: OnEmbedded | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """Embeddings and token counts; `on_part` as each forward pass ends, when given."""
        batch = self.tokenizer(texts, truncate=truncate)  # checks every input's length before any compute
        counts = batch.token_counts

        def report(positions: Sequence[int], vectors: np.ndarray) -> None:
            if on_part is not None:
                on_part(positions, vectors, [counts[position] for position in positions])

        if self.chunk == 1:  # a CPU: no padding, inputs of close token counts together
            return in_token_groups(batch, self._embed, alone=self.graph.alone, on_part=report), counts
        vectors = self._embed(batch) if len(texts) <= self.chunk else self.embed_sorted(texts, self.chunk)
        report(range(len(texts)), vectors)
        return vectors, counts

    def _embed(self, batch: Batch) -> np.ndarray:
        return self.graph(batch)


class SentenceEmbeddingLoader:
    name = "sentence-embedding"

    def load(self, directory: Path, device: str, runtime: str = "onnx") -> EmbeddingInference:
        return EmbeddingInference(directory, device, runtime)


RECIPE = SentenceEmbeddingLoader()
