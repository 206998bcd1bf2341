"""A CountVectorizer-style bag-of-words featurizer that gives CJK text characters and bigrams as terms."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
# A run of CJK characters, or a word of two or more other word characters (sklearn's default token rule).
TOKEN = re.compile(rf"[{_CJK}]+|[^\W{_CJK}]{{2,}}")
CJK_RUN = re.compile(rf"[{_CJK}]")


def terms(text: str) -> list[str]:
    """Lowercased words; CJK runs (no spaces between words) become characters and character bigrams."""
    out: list[str] = []
    for match in TOKEN.finditer(text.lower()):
        token = match.group()
        if CJK_RUN.match(token):
            out.extend(token)
            out.extend(token[i : i + 2] for i in range(len(token) - 1))
        else:
            out.append(token)
    return out


@dataclass(frozen=True)
class SparseBatch:
    """Row-wise term counts in the layout torch.nn.EmbeddingBag takes: flat indices, offsets, weights."""

    indices: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray


class BagOfWords:
    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = list(vocabulary)
        self.index = {term: i for i, term in enumerate(self.vocabulary)}

    @classmethod
    def fit(cls, texts: Iterable[str], max_features: int) -> BagOfWords:
        """Keep the `max_features` terms found in the most documents (ties broken by the term itself)."""
        document_frequency: Counter[str] = Counter()
        for text in texts:
            document_frequency.update(set(terms(text)))
        ranked = sorted(document_frequency.items(), key=lambda item: (-item[1], item[0]))
        return cls(sorted(term for term, _ in ranked[:max_features]))

    def transform(self, texts: Sequence[str]) -> SparseBatch:
        indices: list[int] = []
        counts: list[float] = []
        offsets = np.zeros(len(texts), dtype=np.int64)
        index = self.index
        for row, text in enumerate(texts):
            offsets[row] = len(indices)
            bag = Counter(i for i in map(index.get, terms(text)) if i is not None)
            indices.extend(bag.keys())
            counts.extend(bag.values())
        return SparseBatch(np.asarray(indices, dtype=np.int64), offsets, np.asarray(counts, dtype=np.float32))

    def to_json(self) -> dict[str, object]:
        return {
            "type": "bag-of-words",
            "version": 1,
            "lowercase": True,
            "cjk": "chars+bigrams",
            "vocabulary": self.vocabulary,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> BagOfWords:
        if data.get("type") != "bag-of-words" or data.get("version") != 1:
            raise ValueError("not a version-1 bag-of-words featurizer")
        vocabulary = data["vocabulary"]
        if not isinstance(vocabulary, list) or not all(isinstance(term, str) for term in vocabulary):
            raise ValueError("featurizer vocabulary must be a list of strings")
        return cls(vocabulary)
