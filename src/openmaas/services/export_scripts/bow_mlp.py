"""Predict with this exported OpenMaaS bow-mlp classifier, as the server does: numpy and safetensors only.

    python predict.py "first text" "second text"     # or one text a line on stdin

Prints one JSON object a text: {"label", "score", "scores"}, the same as the server's predictions.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

HERE = Path(__file__).resolve().parent


class Classifier:
    def __init__(self, directory: Path = HERE) -> None:
        pre = json.loads((directory / "preprocessing.json").read_text(encoding="utf-8"))
        self.labels = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
        self.lowercase = bool(pre["lowercase"])
        self.token = re.compile(pre["token_pattern"])
        self.cjk = re.compile(pre["cjk_pattern"])
        vocabulary = json.loads((directory / pre["vocabulary"]).read_text(encoding="utf-8"))
        self.index = {term: i for i, term in enumerate(vocabulary)}
        weights = load_file(str(directory / "model.safetensors"))
        self.hidden = weights["hidden.weight"]  # (vocabulary, hidden units): one row a term
        self.hidden_bias = weights["hidden_bias"]
        self.output = weights["output.weight"]  # (outputs, hidden units)
        self.output_bias = weights["output.bias"]

    def terms(self, text: str) -> list[str]:
        """Words of two or more letters; a run of CJK characters gives its characters and character bigrams."""
        out: list[str] = []
        for match in self.token.finditer(text.lower() if self.lowercase else text):
            token = match.group()
            if self.cjk.match(token):
                out.extend(token)
                out.extend(token[i : i + 2] for i in range(len(token) - 1))
            else:
                out.append(token)
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            bag = Counter(i for i in map(self.index.get, self.terms(text)) if i is not None)
            hidden = self.hidden_bias.copy()
            if bag:
                counts = np.fromiter(bag.values(), dtype=np.float32)
                hidden += (self.hidden[list(bag)] * counts[:, None]).sum(axis=0, dtype=np.float32)
            rows.append(np.maximum(hidden, 0))
        logits = np.stack(rows) @ self.output.T + self.output_bias if rows else np.zeros((0, len(self.output)))
        if logits.shape[1] == 1:  # two classes: one sigmoid unit, the probability of the second label
            positive = 1 / (1 + np.exp(-logits[:, 0]))
            return np.stack([1 - positive, positive], axis=1)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict(self, texts: list[str]) -> list[dict[str, object]]:
        out = []
        for row in self.predict_proba(texts).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append(
                {"label": self.labels[best], "score": row[best], "scores": dict(zip(self.labels, row, strict=True))}
            )
        return out


if __name__ == "__main__":
    texts = sys.argv[1:] or [line.rstrip("\n") for line in sys.stdin]
    for prediction in Classifier().predict(texts):
        print(json.dumps(prediction, ensure_ascii=False))
