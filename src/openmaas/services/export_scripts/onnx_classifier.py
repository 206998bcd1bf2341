"""Predict with this exported OpenMaaS transformer classifier, as the server does: onnxruntime, tokenizers, numpy.

    python predict.py "first text" "second text"     # or one text a line on stdin

Prints one JSON object a text: {"label", "score", "scores"}, the same as the server's predictions. The graph
holds the whole model: the encoder, mean pooling, L2 normalisation, the linear head and the softmax.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
BATCH = 32


class Classifier:
    def __init__(self, directory: Path = HERE) -> None:
        pre = json.loads((directory / "preprocessing.json").read_text(encoding="utf-8"))
        self.labels = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer.from_file(str(directory / pre["tokenizer"]))
        self.tokenizer.enable_truncation(pre["max_length"])  # longer texts are cut, as the server cuts them
        self.tokenizer.enable_padding(pad_id=pre["pad_id"], pad_token=pre["pad_token"], direction="right")
        self.session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        parts = [np.zeros((0, len(self.labels)), dtype=np.float32)]
        for start in range(0, len(texts), BATCH):
            encodings = self.tokenizer.encode_batch(texts[start : start + BATCH])
            arrays = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            parts.append(self.session.run(None, {name: arrays[name] for name in self.inputs})[0])
        return np.concatenate(parts)

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
