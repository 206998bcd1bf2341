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

    def ranked(self, k: int) -> np.ndarray:
        """Each row's `k` most likely labels (all of them when `k` is larger), best first, as indices into
        `labels`: (texts, min(k, labels))."""
        k = min(k, len(self.labels))
        if k < len(self.labels):  # the k best, unordered, in linear time; then only those k are sorted
            top = np.argpartition(-self.probabilities, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(len(self.labels)), self.probabilities.shape)
        order = np.argsort(-np.take_along_axis(self.probabilities, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)


@dataclass(frozen=True)
class Embeddings:
    """One vector per text or image (`vectors[i]`, float32, L2-normalised) and the tokens each text used (0 for
    an image)."""

    vectors: np.ndarray  # (texts, dimensions)
    tokens: tuple[int, ...]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)


@dataclass(frozen=True)
class TokenChoice:
    """A token as OpenAI's logprobs show it: its text, its bytes and its log-probability."""

    token: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """The token taken and, most likely first, the `logprobs` most likely tokens at that position."""

    chosen: TokenChoice
    top: tuple[TokenChoice, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """The next piece of a generation's text, safe to send (no half character, no part of a stop string)."""

    text: str
    # The tokens this piece completes (a token whose text was held back comes with the piece that sends it).
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationDone:
    """A generation's end: why it stopped and the tokens it read and wrote."""

    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
