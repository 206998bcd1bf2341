"""Inference results as the runtime produces them, before any protocol encodes them: a classification
(label names and a probability matrix) and embeddings (a float matrix and the tokens each text used).

Each protocol surface encodes these its own way (the native route's {"label", "score", "scores"}, OpenAI's
embedding objects, KServe v2 tensors); nothing below the API builds a wire shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Classification:
    """Class probabilities for a list of texts: `probabilities[i, j]` is text i's probability of `labels[j]`."""

    labels: tuple[str, ...]
    probabilities: np.ndarray  # (texts, labels), in the model's own float type

    def best(self) -> np.ndarray:
        """Each text's most likely label, as an index into `labels`."""
        return np.argmax(self.probabilities, axis=1)

    def best_labels(self) -> list[str]:
        return [self.labels[index] for index in self.best().tolist()]


@dataclass(frozen=True)
class Embeddings:
    """One vector per text (`vectors[i]`, float32, L2-normalised) and the tokens each text used."""

    vectors: np.ndarray  # (texts, dimensions)
    tokens: tuple[int, ...]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)


@dataclass(frozen=True)
class TextDelta:
    """The next piece of a generation's text, safe to send (no half character, no part of a stop string)."""

    text: str


@dataclass(frozen=True)
class GenerationDone:
    """A generation's end: why it stopped and the tokens it read and wrote."""

    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
